"""Checks judge a measured rate by its interval: fail, pass or inconclusive, with the sample size that would settle
it."""

from __future__ import annotations

import pytest

from fmtool.audit.base import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SKIP,
    check,
    examples_to_settle,
    mean_check,
    rate_check,
    wilson_interval,
    worst_status,
)


def test_two_events_in_twelve_are_inconclusive_and_the_same_rate_in_two_thousand_fails():
    small = rate_check("flip_rate", 2, 12, max_value=0.05)
    assert small.status == INCONCLUSIVE and small.value == pytest.approx(2 / 12)
    assert small.interval[0] < 0.05 < small.interval[1] and small.n == 12
    assert small.needed is not None and 12 < small.needed < 2000
    large = rate_check("flip_rate", 333, 2000, max_value=0.05)
    assert large.status == FAIL and large.interval[0] > 0.05


def test_a_rate_settles_at_the_sample_size_it_reports():
    small = rate_check("flip_rate", 2, 12, max_value=0.05)
    n = small.needed
    assert rate_check("flip_rate", round(n * 2 / 12), n, max_value=0.05).status == FAIL
    assert rate_check("flip_rate", round((n - 1) * 2 / 12), n - 1, max_value=0.05).status == INCONCLUSIVE
    assert examples_to_settle(0.05, 0.05, "max") is None


def test_wilson_interval_matches_its_formula():
    # 2/12 at 95%: the textbook values (Newcombe 1998, method 3)
    low, high = wilson_interval(2, 12)
    assert low == pytest.approx(0.0470, abs=1e-4) and high == pytest.approx(0.4480, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(50, 50)[1] == 1.0


def test_min_thresholds_and_clean_rates():
    assert rate_check("pass_rate", 198, 200, min_value=0.9).status == PASS
    assert rate_check("pass_rate", 10, 200, min_value=0.9).status == FAIL
    assert rate_check("pass_rate", 9, 10, min_value=0.9).status == INCONCLUSIVE
    assert rate_check("flip_rate", 0, 200, max_value=0.05).status == PASS
    assert rate_check("flip_rate", 0, 0, max_value=0.05).status == SKIP


def test_mean_check_uses_a_bootstrap_interval():
    spread = [0.0, 0.2] * 5
    assert mean_check("change", spread, max_value=0.15).status == INCONCLUSIVE
    assert mean_check("change", spread * 100, max_value=0.15).status == PASS
    assert check("plain", 0.2, max_value=0.1).status == FAIL


def test_worst_status_orders_fail_before_inconclusive_before_pass():
    assert worst_status([PASS, INCONCLUSIVE, SKIP]) == INCONCLUSIVE
    assert worst_status([PASS, INCONCLUSIVE, FAIL]) == FAIL
    assert worst_status([SKIP]) == SKIP and worst_status([]) == SKIP
