"""Money from measured throughput: the teacher behind a per-token API vs each student on a
machine rented by the hour.

Conventions (stated in the report):

* A month is 30 days; a self-hosted instance is billed 720 hours a month, always on.
* API: ``$ per request = (input_tokens * price_in + output_tokens * price_out) / 1e6``.
* Self-hosted: one instance processes a request in ``input_tokens / prefill_tps +
  output_tokens / decode_tps`` seconds of its time, where both rates are the measured
  aggregate rates of the benchmark's concurrency-N run (prompt tokens per second of
  TTFT, tokens after the first per second of decoding, times N: ``latency.py``), so
  prefill time is counted once; only ``utilization`` of its hours do useful work
  (traffic is not flat). The throughput was measured on this machine's cores: the
  hardware row's ``vcpus`` should match them (the report warns when it does not). So ``$ per 1M output tokens = usd_per_hour / (3600 * decode_tps *
  utilization) * 1e6``, likewise for input, and the monthly bill is ``instances_needed *
  usd_per_hour * 720`` with enough instances for the stated requests/day.
* Blended $ per 1M tokens weighs input and output prices by the traffic's token mix.
* Break-even: the requests/day at which one instance costs what the API would; none when
  even a fully used instance costs more per request than the API.
* A teacher that ran here (not behind an API) is priced as what it is: self-hosted on the
  same hardware row from its own measured throughput. The API price of the table is then
  an explicit what-if (``api_what_if``), and a student's break-even is given against both:
  against the API as above, and against the self-hosted teacher as the requests/day up to
  which one teacher instance suffices (below it both cost one instance; above it the
  student needs fewer), with the monthly saving at the stated traffic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from edgedistill.errors import UserError

DEFAULT_PRICES = Path(__file__).with_name("prices.yaml")
DAYS_PER_MONTH = 30
HOURS_PER_MONTH = 24 * DAYS_PER_MONTH


@dataclass(frozen=True)
class Traffic:
    requests_per_day: float
    input_tokens_per_request: int
    output_tokens_per_request: int
    utilization: float  # share of an instance's hours doing useful work

    @property
    def tokens_per_request(self) -> int:
        return self.input_tokens_per_request + self.output_tokens_per_request


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


def api_cost(prices: Prices, traffic: Traffic) -> dict:
    """Cost fields of the teacher behind a per-token API."""
    per_request = (traffic.input_tokens_per_request * prices.usd_per_1m_input
                   + traffic.output_tokens_per_request * prices.usd_per_1m_output) / 1e6
    return {
        "usd_per_1m_input_tokens": prices.usd_per_1m_input,
        "usd_per_1m_output_tokens": prices.usd_per_1m_output,
        "usd_per_1m_tokens": per_request / traffic.tokens_per_request * 1e6,
        "usd_per_month": per_request * traffic.requests_per_day * DAYS_PER_MONTH,
        "instances_needed": None,
        "break_even_requests_per_day": None,
    }


def self_hosted_cost(prices: Prices, traffic: Traffic, prefill_tps: float | None, decode_tps: float | None) -> dict:
    """Cost fields of a student on rented machines, from its measured throughput; all None
    when a throughput is missing."""
    if not prefill_tps or not decode_tps:
        return dict.fromkeys(("usd_per_1m_input_tokens", "usd_per_1m_output_tokens", "usd_per_1m_tokens",
                              "usd_per_month", "instances_needed", "break_even_requests_per_day"))
    useful_seconds_per_hour = 3600 * traffic.utilization
    usd_in = prices.usd_per_hour / (useful_seconds_per_hour * prefill_tps) * 1e6
    usd_out = prices.usd_per_hour / (useful_seconds_per_hour * decode_tps) * 1e6
    seconds_per_request = traffic.input_tokens_per_request / prefill_tps + traffic.output_tokens_per_request / decode_tps
    requests_per_instance_day = 24 * useful_seconds_per_hour / seconds_per_request
    instances = max(1, math.ceil(traffic.requests_per_day / requests_per_instance_day))
    api_per_request = (traffic.input_tokens_per_request * prices.usd_per_1m_input
                       + traffic.output_tokens_per_request * prices.usd_per_1m_output) / 1e6
    break_even = prices.usd_per_hour * HOURS_PER_MONTH / (DAYS_PER_MONTH * api_per_request) if api_per_request else None
    return {
        "usd_per_1m_input_tokens": usd_in,
        "usd_per_1m_output_tokens": usd_out,
        "usd_per_1m_tokens": (traffic.input_tokens_per_request * usd_in
                              + traffic.output_tokens_per_request * usd_out) / traffic.tokens_per_request,
        "usd_per_month": instances * prices.usd_per_hour * HOURS_PER_MONTH,
        "instances_needed": instances,
        # one instance pays off above this volume, if one instance can carry it
        "break_even_requests_per_day": break_even if break_even is not None and break_even <= requests_per_instance_day else None,
    }


def capacity_requests_per_day(traffic: Traffic, prefill_tps: float | None, decode_tps: float | None) -> float | None:
    """Requests one instance serves a day at the measured aggregate rates and ``utilization``."""
    if not prefill_tps or not decode_tps:
        return None
    seconds = traffic.input_tokens_per_request / prefill_tps + traffic.output_tokens_per_request / decode_tps
    return 24 * 3600 * traffic.utilization / seconds


def api_what_if(prices: Prices, traffic: Traffic) -> dict:
    """The table's API price for this traffic, labelled as the assumption it is."""
    return {**api_cost(prices, traffic), "api": prices.api_name, "as_of": prices.as_of, "source": prices.file}


def against_self_hosted_teacher(student: dict, teacher: dict, teacher_capacity: float | None,
                                student_capacity: float | None) -> dict:
    """A student's break-even and monthly saving against the teacher self-hosted on the
    same hardware row (module docstring); None where either was not measured."""
    if teacher_capacity is None or student_capacity is None:
        return {"break_even_vs_teacher_requests_per_day": None, "usd_per_month_saved_vs_teacher": None}
    saved = (teacher["usd_per_month"] - student["usd_per_month"]
             if teacher.get("usd_per_month") is not None and student.get("usd_per_month") is not None else None)
    return {"break_even_vs_teacher_requests_per_day": teacher_capacity if student_capacity > teacher_capacity else None,
            "usd_per_month_saved_vs_teacher": saved}
