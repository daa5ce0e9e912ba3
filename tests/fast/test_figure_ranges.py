"""Every chart the learner sees reads right: its axes span its data (never 10^96 ms with the bars
squashed flat), its marks and bands lie where its data is, its title is never cut, and its numbers are
written the language's way; a translated choice shows the page's language; the quiz's score stands
where the learner finishes. Model-free: each figure is built from made-up results."""
from __future__ import annotations

import ast
import math
import numbers
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest

from lab import figures as live
from lab import lesson_figures as lessons
from lab.figures import TITLE_LINE
from lab.i18n import t, texts
from lab.load_generator import RequestKind
from lab.planner import figures as planner
from lab.planner.scenario import Placement
from lab.planner.search import PlacementResult, SweepPoint, crossovers

ROOT = Path(__file__).resolve().parents[2]
BEYOND = 100   # an axis may reach this many times past its data (log) or data spans (linear), no further


# ---- the reusable check ---------------------------------------------------------------------------------

def _numbers(values) -> list[float]:
    return [float(v) for v in (values if values is not None else ())
            if isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v]


def _axis_name(ref: str) -> str:
    """"x", "x2", "y domain" -> "xaxis", "xaxis2", "yaxis"."""
    ref = ref.split()[0]
    return f"{ref[0]}axis{ref[1:]}"


def _trace_data(fig: go.Figure) -> dict[str, list[float]]:
    """Every number each axis must show: the traces' points, and for a bar its base and end."""
    data: dict[str, list[float]] = {}
    for trace in fig.data:
        axes = {"x": _axis_name(getattr(trace, "xaxis", None) or "x"),
                "y": _axis_name(getattr(trace, "yaxis", None) or "y")}
        for letter in "xy":
            values = _numbers(getattr(trace, letter, None))
            if trace.type == "bar" and letter == ("x" if trace.orientation == "h" else "y"):
                base = trace.base if trace.base is not None else 0
                bases = _numbers(base) if isinstance(base, (list, tuple)) else [float(base)] * len(values)
                values = values + [b + v for b, v in zip(bases, values)] + bases
            data.setdefault(axes[letter], []).extend(values)
    return data


def _marks(fig: go.Figure) -> list[tuple[str, str, float]]:
    """(axis, what, data value) of every shape edge and annotation drawn in an axis' coordinates. A shape
    takes data values on a log axis, an annotation log10 ones: both come back as data values."""
    marks = []
    for i, shape in enumerate(fig.layout.shapes):
        for letter in "xy":
            ref = getattr(shape, f"{letter}ref") or letter
            if ref in ("paper",) or "domain" in ref:
                continue
            for end in "01":
                value = getattr(shape, f"{letter}{end}")
                if value is not None:
                    marks.append((_axis_name(ref), f"shape {i} {letter}{end}", float(value)))
    for i, note in enumerate(fig.layout.annotations):
        for letter in "xy":
            ref = getattr(note, f"{letter}ref") or letter
            value = getattr(note, letter)
            if ref == "paper" or "domain" in ref or value is None:
                continue
            axis = _axis_name(ref)
            log = fig.layout[axis].type == "log"
            marks.append((axis, f"annotation {i} ({note.text!r}) {letter}",
                          10 ** float(value) if log and abs(float(value)) < 300 else
                          (math.inf if log else float(value))))
    return marks


def axis_problems(fig: go.Figure, beyond: float = BEYOND) -> list[str]:
    """What is wrong with the figure's numeric axes, in words (empty: nothing). For each axis with data:
    its explicit range, converted from log10 units on a log axis, must cover the data and reach no
    more than `beyond` times past it; every shape and annotation placed on it must lie within that
    range, or, without one, within `beyond` times of the data (plotly stretches an autoranged axis to
    them); a log axis that carries marks must have an explicit range."""
    problems = []
    data = _trace_data(fig)
    marks = _marks(fig)
    for axis, values in data.items():
        if not values:
            continue   # categories only
        layout = fig.layout[axis]
        log = layout.type == "log"
        if log:
            values = [v for v in values if v > 0]   # a log axis cannot show 0: plotly leaves it out
            if not values:
                continue
        low, high = min(values), max(values)
        span = high - low or abs(high) or 1.0
        if log:
            sane = (low / beyond, high * beyond)
        else:
            sane = (low - beyond * span, high + beyond * span)
        mine = [(what, v) for a, what, v in marks if a == axis]
        if layout.range is not None:
            r0, r1 = sorted(float(r) for r in layout.range)
            shown = (10 ** r0, 10 ** r1) if log else (r0, r1)
            if not (shown[0] <= low and high <= shown[1]):
                problems.append(f"{axis}: range {shown} does not cover the data {low}..{high}")
            if shown[0] < sane[0] or shown[1] > sane[1]:
                problems.append(f"{axis}: range {shown} reaches more than {beyond}x past the data {low}..{high}")
            sane = shown
        elif log and mine:
            problems.append(f"{axis}: a log axis with marks needs an explicit range (it stretches to them)")
        for what, v in mine:
            if not (sane[0] <= v <= sane[1]) or (log and v <= 0):
                problems.append(f"{axis}: {what} at {v} lies outside {sane} (data {low}..{high})")
    return problems


def test_the_check_catches_a_mark_given_in_data_units_on_a_log_axis():
    """The check itself can fail: page 2's figure as it was (plotly's add_hline puts its label at y=1000
    on a log axis, read as 10^1000 ms), and a band drawn in log10 units (x ~ 2 tokens)."""
    broken = go.Figure(go.Bar(x=["a", "b"], y=[40.0, 300.0]))
    broken.add_hline(y=1000, annotation_text="1 s")
    broken.update_yaxes(type="log")
    assert any("annotation" in p for p in axis_problems(broken))
    band = go.Figure(go.Scatter(x=[64, 128, 256], y=[1, 2, 3]))
    band.add_vrect(x0=math.log10(64), x1=math.log10(128))
    band.update_xaxes(type="log", range=[1.7, 2.5])
    assert any("shape" in p for p in axis_problems(band))
    wide = go.Figure(go.Scatter(x=[1, 2], y=[10, 20]))
    wide.update_yaxes(type="log", range=[0, 96])
    assert any("reaches more than" in p for p in axis_problems(wide))


# ---- made-up results, shaped as the lab's experiments return them ---------------------------------------

def metrics_result() -> dict:
    return {"ttft_s": [0.21, 0.35, 0.62], "ttft_p50_s": 0.35, "itl_p50_ms": 48.0, "itl_p99_ms": 140.0,
            "tpot_ms": 51.0}


def tokens_frame() -> pd.DataFrame:
    rows = [{"kind": RequestKind.SHORT, "user": u, "t": 0.05 * i + 0.01 * u,
             "gap_ms": 50.0 + (2500 if i == 60 else i % 7)} for u in range(2) for i in range(1, 120)]
    return pd.DataFrame(rows)


def requests_frame() -> pd.DataFrame:
    return pd.DataFrame([{"kind": RequestKind.SHORT, "sent": 0.5 * i, "ttft_s": 0.08 + 0.01 * (i % 3)}
                         for i in range(10)] + [{"kind": RequestKind.LONG, "sent": 2.0, "ttft_s": 3.1}])


def _result(mode: str, per_gpu: float) -> PlacementResult:
    placement = Placement(mode, 2) if mode != "disaggregated" else Placement(mode, prefill=1, decode=1)
    return PlacementResult(placement, 2 * per_gpu, output_tokens=64, tpot_s=(0.03, 0.04))


def sweep(*rows: tuple[int, float, float]) -> list[SweepPoint]:
    """(prompt tokens, colocated per GPU, xPyD per GPU) at each length."""
    return [SweepPoint(n, _result("chunked", c), _result("disaggregated", d)) for n, c, d in rows]


DEFAULT_LIKE = sweep((64, 28.2, 39.4), (128, 19.0, 19.0), (256, 10.7, 9.6), (512, 5.65, 6.16), (1024, 2.65, 3.45),
                     (2048, 1.09, 1.4), (4096, 0.0, 0.15), (8192, 0.0, 0.0))
SHORT_CHUNKED_LONG_XPYD = sweep((64, 28.9, 17.1), (128, 22.9, 14.0), (256, 12.4, 10.2), (512, 6.24, 6.53),
                                (1024, 2.61, 3.63), (2048, 1.22, 1.59))


def built_figures(lang: str) -> dict[str, go.Figure]:
    """Every chart of the lab, built from made-up results."""
    stages = {"prefill": [{"tokens": n, "tok_s": 700 - n / 10, "intensity": n / 3, "gflops": 20 + n / 40}
                          for n in (64, 256, 1024)],
              "decode": [{"batch": b, "step_ms": 30 + 2 * b, "intensity": b / 2, "gflops": 0.5 * b}
                         for b in (1, 4, 16)],
              "peak_gflops": 80.0, "bandwidth_gbs": 12.0}
    transports = [{"transport": "tcp", "bytes": 23_040_000, "gbps": 1.6, "during_prefill": False}]
    links = {t(lang, f"link_{k}"): v for k, v in {"nvlink4": 450.0, "pcie5": 64.0, "tcp_10g": 1.25}.items()}
    bars = [{"lane": "worker-0", "kind": "decode", "long": False, "seconds": 0.05, "start": 0.1 * i, "tokens": 4,
             "batch": 4} for i in range(30)] + [{"lane": "worker-0", "kind": "prefill", "long": True, "seconds": 1.2,
                                                  "start": 3.1, "tokens": 4000, "batch": 1}]
    split = {"queue_s": 0.02, "prefill_s": 1.9, "transfer_s": 0.01, "first_token_s": 0.03}
    samples = pd.DataFrame([{"worker": "worker-0", "t": 0.5 * i, "running": 4, "waiting": i % 2, "kv_used": 0.2}
                            for i in range(20)])
    transfers = [{"tokens": 4003, "total_s": 0.012, "send_s": 0.004, "receive_s": 0.003, "bytes": 9e7, "gbps": 7.5}]
    calibration = {"gemm_efficiency": [{"tokens": n, "share_of_peak": min(0.9, n / 600)} for n in (1, 16, 256, 2048)],
                   "attention_efficiency": [{"tokens": n, "share_of_peak": min(0.6, n / 900)} for n in (1, 16, 256)]}
    rows = [{"step": "decode", "size": "batch 4", "measured_ms": 31.0, "predicted_ms": 29.0, "error_pct": -6.5},
            {"step": "prefill", "size": "512 tokens", "measured_ms": 410.0, "predicted_ms": 450.0, "error_pct": 9.8}]
    tokens, requests = tokens_frame(), requests_frame()
    return {
        "prefill_speed": lessons.prefill_speed(stages, "", lang),
        "decode_steps": lessons.decode_steps(stages, "", lang),
        "roofline": lessons.roofline(stages, "", lang),
        "metric_marks": lessons.metric_marks(metrics_result(), "", lang),
        # a GPU's run: every bar below the good-value band, the 1 s line still on the axis
        "metric_marks_gpu": lessons.metric_marks({**metrics_result(), "ttft_s": [0.012, 0.02], "itl_p50_ms": 5.0,
                                                  "itl_p99_ms": 9.0, "tpot_ms": 6.0}, "", lang),
        "request_timeline": lessons.request_timeline({"sent": 1.0, "scheduled": 1.01, "first_token": 1.3,
                                                      "token_times": [1.3 + 0.05 * i for i in range(20)]}, "", lang),
        "link_times": lessons.link_times(9_000_000_000, links, [], "", lang),
        "link_times_measured": lessons.link_times(9_000_000_000, links, transports, "", lang, "SmolLM2-135M"),
        "prefix_ttft": lessons.prefix_ttft([{"request": r, "ttft_ms": ms, "cached_tokens": c, "prompt_tokens": 300}
                                            for r, ms, c in (("cold", 400, 0), ("warm", 60, 256),
                                                             ("expired", 410, 0))], "", lang),
        "itl_timeline": live.itl_timeline(tokens, [(2.9, 3.05)], "", lang, now=6.0, slice_s=0.5),
        "rolling_itl": live.rolling_itl(tokens, "", lang, every_s=0.5),
        "ttft_chart": live.ttft_chart(requests, "", lang),
        "throughput": live.throughput_chart(tokens, "", lang),
        "server": live.server_chart(samples, "", lang),
        "transfer": live.transfer_chart(transfers, "", lang),
        "compare_itl": live.compare_itl({"a": tokens, "b": tokens.assign(gap_ms=tokens["gap_ms"] * 2)}, "", lang),
        "engine_timeline": live.engine_timeline(bars, "", lang),
        "ttft_split": live.ttft_split_bars([("colocated", split), ("disaggregated", split)], "", lang),
        "goodput": planner.goodput_bars([p.colocated for p in DEFAULT_LIKE], "", lang),
        "attainment": planner.attainment_lines([1.0, 2.0, 3.0], {"1P1D": [1.0, 0.95, 0.7]}, 0.9, "", lang),
        "crossover": planner.crossover_lines(DEFAULT_LIKE, crossovers(DEFAULT_LIKE), "", lang),
        "crossover_once": planner.crossover_lines(SHORT_CHUNKED_LONG_XPYD, crossovers(SHORT_CHUNKED_LONG_XPYD), "",
                                                  lang),
        "calibration": planner.calibration_scatter(rows, 25.0, "", lang),
        "efficiency": planner.efficiency_lines(calibration, "", lang),
    }


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_charts_axes_span_its_data_and_its_marks(lang):
    problems = {name: p for name, fig in built_figures(lang).items() if (p := axis_problems(fig))}
    assert problems == {}


def test_page_2s_ms_axis_shows_the_bars_and_the_good_value_marks():
    fig = lessons.metric_marks(metrics_result(), "", "en")
    low, high = (10 ** r for r in fig.layout.yaxis.range)
    assert low <= 10 and 1000 <= high <= 10_000   # the ITL band from 10 ms, the 1 s line, the 620 ms TTFT
    labels = {a.text: a.y for a in fig.layout.annotations}
    assert labels[t("en", "mark_ttft_target")] == pytest.approx(3)   # log10(1000 ms)
    assert labels[t("en", "mark_itl_range")] == pytest.approx(2)     # log10(100 ms), the band's top


def test_the_crossover_bands_lie_between_the_lengths_where_the_winner_changes():
    crossings = crossovers(DEFAULT_LIKE)
    fig = planner.crossover_lines(DEFAULT_LIKE, crossings, "", "en")
    lengths = [p.prompt_tokens for p in DEFAULT_LIKE]
    bands = [(s.x0, s.x1) for s in fig.layout.shapes]
    assert bands == [(a.prompt_tokens, b.prompt_tokens) for a, b in crossings] == [(64, 256), (256, 512)]
    assert all(min(lengths) <= x0 < x1 <= max(lengths) for x0, x1 in bands)
    # each label over its own band (log10 units on this log axis), two neighbours on different rows
    notes = fig.layout.annotations
    assert all(x0 < 10 ** n.x < x1 for n, (x0, x1) in zip(notes, bands))
    assert notes[0].y != notes[1].y


def test_page_6s_chart_tells_published_link_rates_from_rates_measured_here_and_scaled():
    nbytes = 42_949_672_960   # Llama-3.1-70B's KV of a 131 072-token prompt in bf16
    measured = [{"transport": "tcp", "bytes": 23_040_000, "gbps": 1.6, "during_prefill": False}]
    for lang in ("en", "ru"):
        links = {t(lang, "link_pcie5"): 64.0}
        fig = lessons.link_times(nbytes, links, measured, "", lang, "SmolLM2-135M")
        published, here = fig.data
        assert published.name == t(lang, "legend_links_published") and published.showlegend
        assert "SmolLM2-135M" in here.name and ("23" in here.name)      # whose KV, how big, was measured
        assert here.x[0] == pytest.approx(1000 * nbytes / 1.6e9)       # scaled: this KV at the rate measured
        assert here.y[0] == t(lang, "bar_measured_scaled", transport="tcp")
    assert "vendor figures" not in t("en", "l6_links_measured", size="43 GB")


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_no_chart_title_is_longer_than_a_line_fits(lang):
    """A plotly title is never wrapped by plotly: the lab breaks it into lines that fit (the Russian
    dashboard's ITL title was cut at "...идёт prefill длинного пром")."""
    keys = [k for k in texts(lang)
            if k.startswith(("chart_", "fig_", "plan_fig_")) or "_fig" in k or k in ("l6_links", "l6_links_measured")]
    assert "chart_itl_live" in keys
    for key in keys:
        text = t(lang, key, slice=0.5, size="43,0 GB")
        fig = live.layout(go.Figure(), lang, text, "", "")
        lines = fig.layout.title.text.split("<br>")
        assert all(len(line) <= TITLE_LINE for line in lines), (key, lines)
        assert " ".join(lines).replace("\u00a0", " ") == text   # every word kept, a number beside its unit
        assert fig.layout.margin.t >= 50 + 20 * (len(lines) - 1)   # room for every line


def _number_strings_passed_to_t(path: Path) -> list[str]:
    """f-strings that format a number with a decimal point ({x:g}, {x:.1f}) and are handed to t(): t()
    writes numbers the language's way (0,5 in Russian) only when it is given the number."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "t":
            for kw in node.keywords:
                for part in ast.walk(kw.value):
                    if isinstance(part, ast.FormattedValue) and part.format_spec is not None:
                        spec = "".join(v.value for v in part.format_spec.values if isinstance(v, ast.Constant))
                        if spec.endswith(("g", "e", "%")) or (spec.endswith("f") and not spec.endswith(".0f")):
                            found.append(f"{path.name}:{node.lineno} {kw.arg}={{...:{spec}}}")
    return found


def test_numbers_in_the_pages_sentences_are_given_to_t_as_numbers():
    files = sorted((ROOT / "pages").glob("*.py")) + [ROOT / "lab" / "ui.py"]
    assert [f for path in files for f in _number_strings_passed_to_t(path)] == []


def _choices_keyed_once_for_both_languages(path: Path) -> list[str]:
    """Selectboxes and radios with translated option labels (a format_func) under one key for both
    languages: after a switch the browser shows the old language's label ("BF16 weights and KV cache"
    on the Russian planner). lab.ui.translated_choice keys them per language."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("selectbox", "radio")
                and any(kw.arg == "format_func" for kw in node.keywords)):
            key = next((kw.value for kw in node.keywords if kw.arg == "key"), None)
            labels = next(kw.value for kw in node.keywords if kw.arg == "format_func")
            translated = "lang" in ast.unparse(labels)   # t(lang, ...): not LANGUAGES.get, the same in both
            if translated and not (isinstance(key, ast.JoinedStr) and "lang" in ast.unparse(key)):
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_translated_choices_are_keyed_per_language():
    files = sorted((ROOT / "pages").glob("*.py")) + [ROOT / "lab" / "ui.py"]
    assert [f for path in files for f in _choices_keyed_once_for_both_languages(path)] == []


def _in_page_order(node):
    """Every element under an AppTest block, in the order the page shows them."""
    for _, child in sorted(getattr(node, "children", {}).items()):
        yield child
        yield from _in_page_order(child)


def test_the_quiz_shows_its_score_large_where_the_learner_finishes():
    """The score was a small grey line at the top of a 10 700-pixel page: it is shown, large, after the
    last question, and the compact one at the top counts the answer checked in the same run."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["lang"] = "ru"
    at.switch_page("pages/quiz.py")
    at.run()
    at.radio(key="q-when-needed-ru").set_value("services").run()
    at.button(key="check-when-needed").click().run()
    total = int(at.metric[0].label.split()[-1])
    assert at.metric[0].label == t("ru", "quiz_score", score=1, total=total)
    final = at.metric[-1]
    assert final.label == t("ru", "quiz_final_label") and final.value == f"1 / {total}"
    order = list(_in_page_order(at.main))
    checks = [i for i, e in enumerate(order) if str(getattr(e, "key", "") or "").startswith("check-")]
    assert len(checks) == total and order.index(final) > max(checks)   # below the last question
    assert t("ru", "quiz_final_text", right=1, wrong=0, left=total - 1) in [p.proto.text for p in at.get("progress")]
