"""The dashboard's live lab keeps one run's state together: a new target says what it did to the running
users and clears the old run (its charts would stand under the new workers' names), and a stopped run's
charts all end where the run ended. No model: a stand-in target and load."""
import threading
import time
from types import SimpleNamespace

import pandas as pd

from engine.cluster.topology import Mode
from lab import live_lab
from lab.figures import short_ttft_p50_ms, ttft_chart
from lab.i18n import t
from lab.live_lab import LabStatus, LiveLab
from lab.load_generator import RequestKind
from lab.target import TargetKind, TargetSpec


class FakeTarget:
    note = ""

    def __init__(self):
        self.stopped = False

    def status(self):
        return []

    def stop(self):
        self.stopped = True


class FakeLoad:
    """What LiveLab reads of a LoadGenerator: started, running, stop(), its load's users, its target."""

    def __init__(self, target, users=6):
        self.target, self.load, self.started = target, SimpleNamespace(users=users), time.perf_counter() - 30
        self._running = True

    @property
    def running(self):
        return self._running

    def stop(self):
        self._running = False


COLOCATED = TargetSpec(TargetKind.LOCAL, Mode.COLOCATED)
DISAGGREGATED = TargetSpec(TargetKind.LOCAL, Mode.DISAGGREGATED)


def running_lab(tmp_path) -> LiveLab:
    lab = LiveLab(tmp_path / "runs")
    lab.spec, lab.target, lab.status = COLOCATED, FakeTarget(), LabStatus.READY
    lab.generator, lab.run_label = FakeLoad(lab.target), COLOCATED.label
    lab.samples = [{"t": time.perf_counter(), "worker": "worker-0", "running": 6, "waiting": 0, "kv_used": 0.1}]
    return lab


def test_a_new_target_says_it_stopped_the_users_and_clears_the_old_run(tmp_path, monkeypatch):
    started = threading.Event()
    monkeypatch.setattr(live_lab, "open_target", lambda spec: (started.set(), FakeTarget())[1])
    lab = running_lab(tmp_path)
    old_load, old_target = lab.generator, lab.target
    lab.start_target(DISAGGREGATED)
    assert not old_load.running and old_target.stopped
    assert lab.generator is None and lab.current() is None   # no chart of the colocated run under the new one
    assert all(s["worker"] != "worker-0" for s in lab.samples)
    key, values = lab.notice
    assert key == "notice_load_stopped_for_target" and values == {"users": 6, "old": "colocated",
                                                                  "new": DISAGGREGATED.label}
    for lang in ("en", "ru"):
        assert "6" in t(lang, key, **values) and DISAGGREGATED.label in t(lang, key, **values)
    assert started.wait(5)


def test_a_new_target_without_load_running_still_says_it_cleared_the_previous_run(tmp_path, monkeypatch):
    monkeypatch.setattr(live_lab, "open_target", lambda spec: FakeTarget())
    lab = running_lab(tmp_path)
    lab.stop_load()
    lab.start_target(DISAGGREGATED)
    assert lab.notice[0] == "notice_run_cleared_for_target" and lab.generator is None


def test_stopping_the_engine_under_a_running_load_says_so(tmp_path):
    lab = running_lab(tmp_path)
    lab.stop_target()
    assert lab.notice[0] == "notice_load_stopped_with_target" and lab.generator is not None   # the run stays


def run_result(started: float, last_token: float) -> SimpleNamespace:
    stream = SimpleNamespace(token_times=[started + 1.0, last_token], request_id="r0")
    return SimpleNamespace(started=started, requests=[SimpleNamespace(stream=stream, kind=RequestKind.SHORT)])


def test_a_stopped_runs_charts_end_where_it_stopped_not_at_the_wall_clock(tmp_path):
    lab = running_lab(tmp_path)
    started = lab.generator.started
    result = run_result(started, started + 29.0)
    assert abs(lab.view_end(result) - (time.perf_counter() - started)) < 1.0    # running: now
    lab.stop_load()
    end = lab.view_end(result)
    time.sleep(0.2)
    assert lab.view_end(result) == end and 29.0 <= end < 31.0     # frozen at the stop, the clock runs on
    lab.stopped_at = None                                         # a load that ended on its own: its last token
    assert lab.view_end(result) == 29.0


def test_the_ttft_p50_beside_the_chart_is_the_median_of_its_short_points():
    requests = pd.DataFrame([{"kind": RequestKind.SHORT, "sent": float(i), "ttft_s": 0.1 * (i + 1)}
                             for i in range(6)]     # six users' first requests, all still streaming
                            + [{"kind": RequestKind.LONG, "sent": 3.0, "ttft_s": 5.0},
                               {"kind": RequestKind.SHORT, "sent": 7.0, "ttft_s": float("nan")}])
    fig = ttft_chart(requests, "", "en")
    shorts = next(trace for trace in fig.data if trace.name == t("en", "legend_short"))
    assert len(shorts.y) == 6
    assert short_ttft_p50_ms(requests) == 1000 * pd.Series(shorts.y).median()
    assert short_ttft_p50_ms(requests.iloc[6:7]) != short_ttft_p50_ms(requests.iloc[6:7])   # none: NaN, shown "-"
