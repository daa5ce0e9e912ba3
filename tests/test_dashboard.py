"""The live dashboard: renders in both languages, starts a real engine, runs users, injects a long
prompt, records a run. Fragments do not tick in AppTest, so each check re-runs the script."""
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.labels import foreign_words, visible_texts

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def wait_for(at: AppTest, predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        at.run()
        assert not at.exception, at.exception
        if predicate(at):
            return
        time.sleep(1.0)
    raise AssertionError("the dashboard did not reach the expected state in time")


def texts(at: AppTest) -> str:
    return " ".join([c.value for c in at.caption] + [m.value for m in at.markdown] + [i.value for i in at.info])


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("PDLAB_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(APP, default_timeout=120)
    yield at
    # Leave no engine running for the next test: press stop on the way out.
    at.run()
    at.button(key="stop_target").click().run()


@pytest.mark.parametrize("lang,title", [("en", "Live dashboard"), ("ru", "Панель в реальном времени")])
def test_dashboard_renders_in_both_languages(app, lang, title):
    app.session_state["lang"] = lang
    app.run()
    assert not app.exception
    assert app.title[0].value == title


def test_the_chosen_target_stays_chosen_when_the_language_changes(app):
    app.run()
    app.radio(key="target_kind_en").set_value("remote").run()
    app.session_state["lang"] = "ru"
    app.run()
    assert app.radio(key="target_kind_ru").value == "remote" and app.text_input(key="url")
    assert not app.exception


def start_three_users(app) -> None:
    """A colocated engine, and three chat users of 16 tokens each on it."""
    app.run()
    app.button(key="start_target").click().run()
    wait_for(app, lambda at: "worker-0 (colocated" in texts(at))
    app.slider(key="users").set_value(3)
    app.slider(key="output_tokens").set_value(16)
    app.button(key="start_load").click().run()


def test_start_users_inject_and_record_on_the_real_engine(app, tmp_path):
    start_three_users(app)
    wait_for(app, lambda at: "ITL p50" in texts(at), timeout=60)
    app.slider(key="inject_tokens").set_value(1000)
    app.button(key="inject").click().run()

    def injected(at):
        charts = [c for c in at.get("plotly_chart")]
        return charts and '"vrect"' not in charts[0].proto.spec and '"rect"' in charts[0].proto.spec
    wait_for(app, injected, timeout=90)
    app.session_state["lang"] = "ru"   # the live view in Russian, with an engine and data: no English label
    app.run()
    assert not app.exception and foreign_words(visible_texts(app)) == set()
    app.session_state["lang"] = "en"
    app.run()
    app.text_input(key="run_name").set_value("colocated test")
    app.button(key="record").click().run()
    assert not app.exception
    saved = list((tmp_path / "runs").iterdir())
    assert len(saved) == 1 and (saved[0] / "tokens.csv").exists()
    assert "colocated-test" in saved[0].name
    app.run()
    assert app.multiselect(key="compare").value == [saved[0].name]
    app.button(key="stop_load").click().run()
    assert not app.exception
    # Nothing new arrives once the users stop: the live charts are sent unchanged, which the browser
    # does not redraw (the engine timeline's window would otherwise move with the clock).
    time.sleep(2.0)
    app.run()
    first = [c.proto.spec for c in app.get("plotly_chart")][:2]
    time.sleep(2.5)
    app.run()
    assert [c.proto.spec for c in app.get("plotly_chart")][:2] == first


def charts(at: AppTest) -> dict[str, dict]:
    """The dashboard's charts by title."""
    import json
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return {s["layout"].get("title", {}).get("text", ""): s for s in specs}


def values(array) -> list:
    """A trace's x or y as numbers: Plotly sends numeric arrays base64-encoded ({"dtype", "bdata"})."""
    import base64

    import numpy as np
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array or [])


def points(spec: dict) -> int:
    return sum(len(values(trace.get("y")) or values(trace.get("x"))) for trace in spec["data"])


def test_the_dashboard_keeps_one_runs_state_across_a_mode_switch_and_a_stop(app):
    import re

    import numpy as np

    from engine.cluster.topology import Mode
    from lab.i18n import t
    start_three_users(app)
    ttft_title = t("en", "chart_ttft")

    def ttft_points(at):
        shown = charts(at).get(ttft_title)
        return shown and any(trace["name"] == "short" and len(values(trace["y"])) >= 3 for trace in shown["data"])
    wait_for(app, ttft_points, timeout=90)
    # The TTFT p50 beside the chart is the median of the chart's short points, in-flight requests included
    # (the summary and the chart are read a moment apart: a new first token in between is retried).
    def agree(at):
        short = next(values(trace["y"]) for trace in charts(at)[ttft_title]["data"] if trace["name"] == "short")
        said = re.search(r"short TTFT p50 (\S+) ms", texts(at)).group(1)
        return said == f"{1000 * float(np.median(short)):.0f}"
    wait_for(app, agree, timeout=30)

    # Another mode while the users stream: the dashboard says it stopped them and drops the old run's charts.
    app.selectbox(key="mode_en").set_value(Mode.CHUNKED).run()
    app.button(key="start_target").click().run()
    warning = " ".join(w.value for w in app.warning)
    assert "stopped the 3 chat users that ran on colocated" in warning, warning
    assert not app.get("plotly_chart")
    wait_for(app, lambda at: not at.button(key="start_load").disabled)
    assert "stopped the 3 chat users" in " ".join(w.value for w in app.warning)   # still said once ready
    assert not app.get("plotly_chart")

    # A new run, then Stop: every chart keeps that run, up to its end.
    app.button(key="start_load").click().run()
    wait_for(app, lambda at: ttft_points(at) and len(charts(at)) >= 5, timeout=90)
    assert not app.warning
    app.button(key="stop_load").click().run()
    time.sleep(1.0)
    app.run()
    assert "The load is stopped" in texts(app)
    shown = charts(app)
    assert len(shown) >= 5 and all(points(spec) for spec in shown.values()), {k: points(v) for k, v in shown.items()}
