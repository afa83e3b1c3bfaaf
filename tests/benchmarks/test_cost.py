"""Cost arithmetic against hand-computed numbers, and the price table's errors."""

import math

import pytest

from edgedistill.benchmarks.cost import (
    Traffic, against_self_hosted_teacher, api_cost, capacity_requests_per_day, self_hosted_cost)
from edgedistill.prices import Prices, load_prices
from edgedistill.errors import UserError

PRICES = Prices("t.yaml", "2026-11-28", "assumed", "api", 2.0, 8.0, "box", 0.36)
TRAFFIC = Traffic(requests_per_day=1000, input_tokens_per_request=300, output_tokens_per_request=100, utilization=0.5)


def test_api_cost_is_tokens_times_price():
    cost = api_cost(PRICES, TRAFFIC)
    per_request = (300 * 2.0 + 100 * 8.0) / 1e6  # $0.0014
    assert cost["usd_per_month"] == pytest.approx(per_request * 1000 * 30)
    assert cost["usd_per_1m_tokens"] == pytest.approx(per_request / 400 * 1e6)  # blended: 3.5
    assert cost["usd_per_1m_input_tokens"] == 2.0 and cost["instances_needed"] is None


def test_self_hosted_cost_from_throughput_and_utilization():
    cost = self_hosted_cost(PRICES, TRAFFIC, prefill_tps=1000.0, decode_tps=100.0)
    # $0.36/h at 50% utilization buys 1800 useful seconds: 1.8M prompt tokens or 180k output tokens
    assert cost["usd_per_1m_input_tokens"] == pytest.approx(0.2)
    assert cost["usd_per_1m_output_tokens"] == pytest.approx(2.0)
    assert cost["usd_per_1m_tokens"] == pytest.approx((300 * 0.2 + 100 * 2.0) / 400)
    # a request takes 0.3 + 1.0 s; one instance serves 86400 * 0.5 / 1.3 = 33231 a day
    assert cost["instances_needed"] == 1 and cost["usd_per_month"] == pytest.approx(0.36 * 720)
    # the API's $0.0014 a request pays for one instance's $259.2 a month at 6171 requests a day
    assert cost["break_even_requests_per_day"] == pytest.approx(0.36 * 720 / (30 * 0.0014))


def test_a_student_against_the_teacher_self_hosted_on_the_same_row():
    # teacher: a request takes 300/500 + 100/20 = 5.6 s -> 86400 * 0.5 / 5.6 = 7714 a day per instance
    teacher_capacity = capacity_requests_per_day(TRAFFIC, 500.0, 20.0)
    assert teacher_capacity == pytest.approx(86400 * 0.5 / 5.6)
    busy = Traffic(20_000, 300, 100, 0.5)
    teacher = self_hosted_cost(PRICES, busy, 500.0, 20.0)
    student = self_hosted_cost(PRICES, busy, 1000.0, 100.0)
    assert teacher["instances_needed"] == 3 and student["instances_needed"] == 1
    against = against_self_hosted_teacher(student, teacher, capacity_requests_per_day(busy, 500.0, 20.0),
                                          capacity_requests_per_day(busy, 1000.0, 100.0))
    # up to one teacher instance's capacity both cost one instance; the student saves two instances here
    assert against["break_even_vs_teacher_requests_per_day"] == pytest.approx(teacher_capacity)
    assert against["usd_per_month_saved_vs_teacher"] == pytest.approx(2 * 0.36 * 720)
    slower = against_self_hosted_teacher(teacher, student, capacity_requests_per_day(busy, 1000.0, 100.0),
                                         capacity_requests_per_day(busy, 500.0, 20.0))
    assert slower["break_even_vs_teacher_requests_per_day"] is None
    assert against_self_hosted_teacher(student, teacher, None, 1.0)["usd_per_month_saved_vs_teacher"] is None


def test_instances_scale_with_traffic_and_break_even_needs_a_cheaper_instance():
    busy = Traffic(100_000, 300, 100, 0.5)
    assert self_hosted_cost(PRICES, busy, 1000.0, 100.0)["instances_needed"] == math.ceil(100_000 / (86400 * 0.5 / 1.3))
    slow = self_hosted_cost(PRICES, TRAFFIC, prefill_tps=10.0, decode_tps=1.0)  # dearer per request than the API
    assert slow["break_even_requests_per_day"] is None
    assert all(v is None for v in self_hosted_cost(PRICES, TRAFFIC, None, 100.0).values())


def test_the_shipped_table_is_labelled_and_rows_are_selectable():
    prices = load_prices()
    assert prices.as_of == "2026-11-28" and "assum" in prices.assumption
    assert load_prices(api="small-api", hardware="gpu-l4").usd_per_hour == 0.80
    assert prices.hardware_vcpus == 2 and prices.describe()["hardware"]["vcpus"] == 2


def test_price_table_errors_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="no api row 'nope'; choose one of: frontier-api"):
        load_prices(api="nope")
    with pytest.raises(UserError, match="is not a file"):
        load_prices(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("api_default: a\nhardware_default: h\napi: {a: {usd_per_1m_input_tokens: -1, usd_per_1m_output_tokens: 1}}\n"
                   "hardware: {h: {usd_per_hour: 1}}\n")
    with pytest.raises(UserError, match="usd_per_1m_input_tokens must be a non-negative number, got -1"):
        load_prices(str(bad))
