"""The price table: what an API charges per token and what hardware costs per hour, as
dated assumptions in a YAML file (the shipped ``prices.yaml`` or the user's copy). The data
generator prices its API calls with it and the bench its cost comparison (``benchmarks.cost``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")


@dataclass(frozen=True)
class Prices:
    file: str
    as_of: str
    assumption: str
    api_name: str
    usd_per_1m_input: float
    usd_per_1m_output: float
    hardware_name: str
    usd_per_hour: float
    hardware_vcpus: int | None = None

    def api_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        """What these tokens cost at the API row's prices."""
        return (prompt_tokens * self.usd_per_1m_input + completion_tokens * self.usd_per_1m_output) / 1e6

    def api_row(self) -> dict:
        return {"name": self.api_name, "usd_per_1m_input": self.usd_per_1m_input,
                "usd_per_1m_output": self.usd_per_1m_output, "as_of": self.as_of, "file": self.file}

    def describe(self) -> dict:
        return {"file": self.file, "as_of": self.as_of, "assumption": self.assumption,
                "api": {"name": self.api_name, "usd_per_1m_input_tokens": self.usd_per_1m_input,
                        "usd_per_1m_output_tokens": self.usd_per_1m_output},
                "hardware": {"name": self.hardware_name, "usd_per_hour": self.usd_per_hour, "vcpus": self.hardware_vcpus}}


def load_prices(path: str = "", api: str = "", hardware: str = "") -> Prices:
    """The price table (``path`` or the shipped defaults) with one API row and one hardware
    row picked (``api`` / ``hardware``, or the file's defaults). Raises UserError naming
    the problem."""
    import yaml

    file = Path(path).expanduser() if path else DEFAULT_PRICES
    if not file.is_file():
        raise UserError(f"bench.cost.prices '{path}' is not a file; copy {DEFAULT_PRICES} and edit it")
    try:
        table = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UserError(f"bench.cost.prices {file} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(table, dict):
        raise UserError(f"bench.cost.prices {file} must be a mapping with as_of, api and hardware")
    api_row = _row(table, "api", api or table.get("api_default", ""), file)
    hardware_row = _row(table, "hardware", hardware or table.get("hardware_default", ""), file)
    return Prices(str(file), str(table.get("as_of", "unknown")), str(table.get("assumption", "")),
                  api or table["api_default"], _price(api_row, "usd_per_1m_input_tokens", file),
                  _price(api_row, "usd_per_1m_output_tokens", file), hardware or table["hardware_default"],
                  _price(hardware_row, "usd_per_hour", file), _vcpus(hardware_row, file))


def _row(table: dict, section: str, name: str, file: Path) -> dict:
    rows = table.get(section)
    if not isinstance(rows, dict) or not rows:
        raise UserError(f"bench.cost.prices {file} has no '{section}' rows")
    if name not in rows or not isinstance(rows[name], dict):
        raise UserError(f"bench.cost.prices {file}: no {section} row '{name}'; choose one of: {', '.join(rows)}")
    return rows[name]


def _price(row: dict, key: str, file: Path) -> float:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise UserError(f"bench.cost.prices {file}: {key} must be a non-negative number, got {value!r}")
    return float(value)


def _vcpus(row: dict, file: Path) -> int | None:
    value = row.get("vcpus")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"bench.cost.prices {file}: vcpus must be a positive integer, got {value!r}")
    return value
