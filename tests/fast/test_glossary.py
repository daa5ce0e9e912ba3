"""One glossary keeps the Russian terms consistent, and no Russian text has an English word
(tests/test_russian_pages.py renders the pages)."""
import re

from lab.i18n import texts
from lab.quiz import load_questions
from tests.labels import foreign_words, glossary

def russian_texts() -> dict[str, str]:
    found = {f"texts:{key}": value for key, value in texts("ru").items()}
    for q in load_questions():
        found[f"quiz:{q.id}"] = q.text["ru"]
        found[f"quiz:{q.id}:explanation"] = q.explanation["ru"]
        found |= {f"quiz:{q.id}:{o['id']}": o["ru"] for o in q.options}
    return found


def test_russian_texts_use_the_glossarys_words():
    wrong = []
    for term in glossary()["terms"]:
        for variant in term["avoid"]:
            wrong += [(where, variant, term["ru"]) for where, text in russian_texts().items()
                      if re.search(variant, text, re.IGNORECASE)]
    assert not wrong, "use the glossary's term instead: " + "; ".join(f"{w}: {v!r} -> {r!r}" for w, v, r in wrong)


def test_no_russian_text_has_an_english_word():
    found = {where: foreign_words([re.sub(r"{[^}]*}", " ", text)]) for where, text in russian_texts().items()}
    assert {where: words for where, words in found.items() if words} == {}


def test_the_check_finds_an_english_label():
    assert foreign_words(["Время (с)", "TTFT, мс", "prefill-0 (prefill)"]) == set()
    assert foreign_words(["time (s)", "Запросы"]) == {"time"}
