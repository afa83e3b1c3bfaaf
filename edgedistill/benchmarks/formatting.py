"""How the benchmark report and the build comparison print numbers: units live in the column
header, except % and $, which read better attached; None prints as "-"."""

from __future__ import annotations

import math

NULL = "-"


def significant(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def ms(seconds: float) -> str:
    return significant(seconds * 1000)


def mb(byte_count: float) -> str:
    return significant(byte_count / 1e6)  # MB = 10^6 bytes, as disks and cloud bills count


def percent(fraction: float) -> str:
    return f"{fraction * 100:.1f}%"


def points(fraction_delta: float) -> str:
    return f"{fraction_delta * 100:.1f} pp"  # a change in a percentage is in percentage points


def usd(dollars: float) -> str:
    """Two significant digits below $1 (up to 4 decimals), cents above: $0.12, $0.0034, $1,234.50."""
    if dollars == 0 or abs(dollars) >= 1:
        return f"${dollars:,.2f}"
    if abs(dollars) < 0.0001:
        return "<$0.0001"
    decimals = min(4, max(2, 1 - math.floor(math.log10(abs(dollars)))))
    return f"${dollars:.{decimals}f}"


def two_decimals(value: float) -> str:
    return f"{value:.2f}"


def three_decimals(value: float) -> str:
    return f"{value:.3f}"


def whole(value: float) -> str:
    return f"{value:,.0f}"


def plain(value) -> str:
    """A settings/traffic value for prose: None -> "-", 10000 -> "10,000", 143.5 -> "143.5"."""
    if value is None:
        return NULL
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def lookup(entry: dict, path: tuple[str, ...]):
    """entry[path[0]][path[1]]..., None as soon as a level is None (e.g. "concurrent": null)."""
    value = entry
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value
