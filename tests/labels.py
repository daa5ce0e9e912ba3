"""What a learner reads on a page rendered by Streamlit's AppTest, and the Latin words in it that the
glossary does not keep: a Russian page must show none."""
from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import yaml
from streamlit.testing.v1 import AppTest

LANGUAGE_SELECTOR = "Language / Язык"
GLOSSARY = Path(__file__).resolve().parents[1] / "lab" / "texts" / "glossary.yaml"


@cache
def glossary() -> dict:
    return yaml.safe_load(GLOSSARY.read_text(encoding="utf-8"))


def visible_texts(at: AppTest) -> list[str]:
    """Titles, texts, captions, boxes, widget labels and options, table cells, and every chart's title,
    axis titles, legend names and annotations."""
    texts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "info", "success",
                                  "warning", "error") for e in getattr(at, kind)]
    for kind in ("button", "radio", "slider", "selectbox", "multiselect", "text_area", "text_input",
                 "number_input", "checkbox", "toggle"):
        for widget in getattr(at, kind):
            if widget.label == LANGUAGE_SELECTOR:   # each language's name in that language, by design
                continue
            texts.append(widget.label)
            texts.extend(str(o) for o in getattr(widget, "options", []) or [])
    texts += [m.label for m in at.metric] + [m.value for m in at.metric]
    texts += [link.proto.label for link in at.get("page_link")]
    for table in list(at.table) + list(at.dataframe):
        frame = table.value
        texts += [str(c) for c in frame.columns] + [str(i) for i in frame.index]
        # A missing number is shown as a dash (lab.ui.show_table's na_rep), not as the word "nan".
        texts += [str(v) for v in frame.values.ravel() if not (isinstance(v, float) and math.isnan(v))]
    for chart in at.get("plotly_chart"):
        texts += _figure_texts(json.loads(chart.proto.spec))
    return [t for t in texts if t]


def _figure_texts(figure: dict) -> list[str]:
    layout = figure.get("layout", {})
    texts = [_title(layout.get("title"))]
    for name, axis in layout.items():
        if name.startswith(("xaxis", "yaxis")):
            texts.append(_title(axis.get("title")))
    texts += [a.get("text", "") for a in layout.get("annotations", [])]
    for trace in figure.get("data", []):
        texts.append(trace.get("name", ""))
        labels = trace.get("text")
        texts += [str(x) for x in labels] if isinstance(labels, list) else [str(labels or "")]
    return [t for t in texts if t]


def _title(title) -> str:
    return title.get("text", "") if isinstance(title, dict) else (title or "")


def foreign_words(texts: list[str]) -> set[str]:
    """Latin words (2+ letters) that are not kept terms of the glossary, outside URLs, code and identifiers."""
    kept = {w.lower() for w in glossary()["latin"]}
    words = set()
    for text in texts:
        text = re.sub(r"\S+\.(com|org|io|ai)\S*|`[^`]*`|<[^>]*>", " ", text)   # URLs, code, HTML tags
        chunks = [c for c in text.split() if not re.search(r"\d", c)]   # identifiers, versions, 80GB: not words
        words |= {w for c in chunks for w in re.findall(r"[A-Za-z]{2,}", c) if w.lower() not in kept}
    return words
