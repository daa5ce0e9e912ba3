"""Every source a learner's text cites is listed in docs/sources.md, with the words it rests on, and every
citation listed there is still made by some text (model-free: reads YAML and Markdown only).

The texts keep human citations ("DistServe (OSDI'24)", "Mooncake, FAST 2025", arxiv.org/abs/...); the
table's column "cited as" lists them, a venue tag written as `Name VENUE'YY`."""
import re
from pathlib import Path

import pytest

from lab.i18n import LANGUAGES, texts
from lab.quiz import load_questions

SOURCES = Path(__file__).resolve().parents[2] / "docs" / "sources.md"
VENUES = "OSDI|ISCA|FAST|NSDI|SOSP|MLSys|EuroSys|ASPLOS|ATC|NeurIPS|ICML|ICLR"
# "DistServe (OSDI'24)", "Sarathi-Serve (OSDI'24)", "Mooncake, FAST 2025" -> Name VENUE'YY
VENUE_TAG = re.compile(rf"\b([A-Z][\w-]*)(?:\s*\(|,\s*)({VENUES})\s?'?\s?(\d{{4}}|\d{{2}})\b")
URL = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:com|org|io|ai|net|dev)\b(?:/[^\s)\"'`,;]*)?")


def learner_texts() -> dict[str, str]:
    """Every text a learner can read: the pages' texts and the quiz, in both languages."""
    found = {f"{lang}:{key}": value for lang in LANGUAGES for key, value in texts(lang).items()}
    for q in load_questions():
        for lang in LANGUAGES:
            found[f"quiz:{q.id}:{lang}"] = q.text[lang]
            found[f"quiz:{q.id}:{lang}:explanation"] = q.explanation[lang]
            if q.text_measured:
                found[f"quiz:{q.id}:{lang}:measured"] = q.text_measured[lang]
            found |= {f"quiz:{q.id}:{lang}:{o['id']}": o[lang] for o in q.options}
    return found


def citations(text: str) -> set[str]:
    tags = {f"{name} {venue}'{year[-2:]}" for name, venue, year in VENUE_TAG.findall(text)}
    return tags | {url.rstrip(".") for url in URL.findall(text)}


def source_rows() -> list[dict[str, str]]:
    """The table's rows: id, cited as (a list), used in, source, the words it rests on. A cell holds no
    "|" (the table would not render either)."""
    rows = []
    for line in SOURCES.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 5 or cells[0] in ("id", "---"):
            continue
        rows.append({"id": cells[0], "cited_as": re.findall(r"`([^`]+)`", cells[1]), "used_in": cells[2],
                     "source": cells[3], "quote": cells[4]})
    return rows


def test_the_table_has_rows_with_a_source_and_the_words_it_rests_on():
    rows = source_rows()
    assert len(rows) >= 15
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "ids must be unique"
    for r in rows:
        assert re.search(r"https?://|results/|\.py", r["source"]), (r["id"], "needs a URL or a file")
        assert len(r["quote"]) > 20, (r["id"], "needs the words it rests on")


def test_every_citation_in_a_text_is_listed_in_docs_sources():
    listed = {c for r in source_rows() for c in r["cited_as"]}
    missing = {(where, c) for where, text in learner_texts().items() for c in citations(text) if c not in listed}
    assert not missing, "add these to docs/sources.md (column 'cited as'): " + "; ".join(sorted(
        f"{where}: {c}" for where, c in missing))


def test_every_listed_citation_is_still_made_by_some_text():
    made = set().union(*map(citations, learner_texts().values()))
    everything = "\n".join(learner_texts().values())
    stale = {(r["id"], c) for r in source_rows() for c in r["cited_as"] if c not in made and c not in everything}
    assert not stale, f"no text cites these any more; update docs/sources.md: {sorted(stale)}"


@pytest.mark.parametrize("text,found", [
    ("DistServe (OSDI'24): up to 7.4x", {"DistServe OSDI'24"}),
    ("layer by layer (Mooncake, FAST 2025: arxiv.org/abs/2407.00079).",
     {"Mooncake FAST'25", "arxiv.org/abs/2407.00079"}),
    ("(design doc: docs.vllm.ai/en/latest/design/nixl_kv_push_connector/).",
     {"docs.vllm.ai/en/latest/design/nixl_kv_push_connector/"}),
    ("no citation here, e.g. 2.6x and engine/metrics.py", set()),
])
def test_citations_are_found_as_the_texts_write_them(text, found):
    assert citations(text) == found


def test_the_cited_figures_are_the_sources_figures():
    """The numbers issue 32 corrected stay corrected, in both languages."""
    en, ru = texts("en"), texts("ru")
    assert "Splitwise-AA" in en["field_splitwise"] and "1.18x" in en["field_splitwise"]
    assert "Splitwise-AA" in ru["field_splitwise"] and "1,18 раза" in ru["field_splitwise"]
    assert "best designs mix" not in en["field_splitwise"]
    for lang, capacity in (("en", "59%-498%"), ("ru", "59-498%")):
        assert capacity in texts(lang)["field_mooncake"] and "115%" in texts(lang)["field_mooncake"]
    assert "save the KV layer by layer" not in en["l6_text"] and "NixlPushConnector" in en["l6_text"]
    assert "NixlPushConnector" in ru["l6_text"] and "NIXL READ" in ru["l6_text"]
    assert "strict reading pace" not in en["plan_sweep_text"]
    quiz = {q.id: q for q in load_questions()}
    assert "0.99 x 198 = 196.02" in quiz["itl-vs-tpot"].explanation["en"]
    assert "0,99 x 198 = 196,02" in quiz["itl-vs-tpot"].explanation["ru"]
    assert "no chunked prefill" in quiz["ten-users"].text["en"]
    assert "без chunked prefill" in quiz["ten-users"].text["ru"]


def test_numpy_puts_the_p99_of_199_gaps_at_the_third_largest():
    """What the itl-vs-tpot explanation says: one or two 5 s stalls among 199 gaps leave p99 near the
    ordinary gap (two lift it by a fiftieth of the stall), three lift it to the stall."""
    np = pytest.importorskip("numpy")
    p99 = [float(np.percentile([0.05] * (199 - k) + [5.05] * k, 99)) for k in (1, 2, 3)]
    assert p99 == pytest.approx([0.05, 0.15, 5.05])
