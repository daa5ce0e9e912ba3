"""Metrics against hand-computed values, with vLLM's benchmark-client definitions."""
import math

import pytest

from engine.metrics import SLO, Timing, stats, summarize

A = Timing(sent=0.0, token_times=[0.5, 0.6, 0.8, 1.1])   # TTFT .5, gaps .1 .2 .3, E2E 1.1
B = Timing(sent=1.0, token_times=[1.2])                  # one token: no ITL, no TPOT
C = Timing(sent=2.0, token_times=[], ok=False)           # failed


def test_single_request_values():
    assert A.ttft == pytest.approx(0.5)
    assert A.e2e == pytest.approx(1.1)
    assert A.itls == pytest.approx([0.1, 0.2, 0.3])
    assert A.tpot == pytest.approx((1.1 - 0.5) / 3)


def test_one_token_output_has_ttft_but_no_itl_or_tpot():
    assert B.ttft == pytest.approx(0.2) and B.itls == [] and B.tpot is None


def test_itl_is_pooled_over_requests_and_percentiles_interpolate():
    s = summarize([A, B, C])
    assert (s.requests, s.completed, s.output_tokens) == (3, 2, 5)
    assert s.duration == pytest.approx(1.2)          # first sent (0.0) -> last token (1.2)
    assert s.itl["mean"] == pytest.approx(0.2)
    assert s.itl["p50"] == pytest.approx(0.2)
    assert s.itl["p90"] == pytest.approx(0.28)       # numpy linear: 0.2 + 0.8 * 0.1
    assert s.itl["max"] == pytest.approx(0.3)
    assert s.ttft["mean"] == pytest.approx(0.35)
    assert s.tpot["p50"] == pytest.approx(0.2)       # only A has a TPOT
    assert s.request_throughput == pytest.approx(2 / 1.2)
    assert s.output_throughput == pytest.approx(5 / 1.2)


def test_goodput_counts_requests_meeting_every_slo():
    s = summarize([A, B, C], duration=2.0, slo=SLO(ttft=0.3, tpot=0.05))
    # A misses TTFT (0.5 > 0.3); B meets TTFT and has no TPOT to miss; C failed.
    assert s.goodput == pytest.approx(1 / 2.0)
    assert s.slo_attainment == pytest.approx(1 / 3)
    loose = summarize([A, B], duration=2.0, slo=SLO(ttft=1.0, tpot=0.25))
    assert loose.slo_attainment == 1.0


def test_no_requests_gives_nan_not_zero_latency():
    s = summarize([])
    assert s.requests == 0 and s.duration == 0.0
    assert math.isnan(s.ttft["p50"]) and math.isnan(s.request_throughput)
    assert math.isnan(summarize([], slo=SLO(ttft=1.0)).goodput)


def test_stats_of_empty_list_is_nan():
    assert all(math.isnan(v) for v in stats([]).values())
