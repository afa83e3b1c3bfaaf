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

from edgedistill.prices import Prices

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
