"""Quiz data and learner texts: schema, both languages everywhere, grading."""
import re

import pytest
import yaml

from lab.i18n import LANGUAGES, human_bytes, num, t, texts
from lab.quiz import QUESTIONS, QuizError, load_questions, score


def test_questions_load_and_cover_every_page_with_the_lecture_question_first():
    questions = load_questions()
    assert len(questions) >= 13
    assert {q.page for q in questions} >= {"stages", "metrics", "problem", "fix", "travel", "lifetime", "summary"}
    first = questions[0]
    assert first.text["ru"] == "Когда нужен Disaggregated Prefill?" and first.correct == {"services"}
    assert {q.kind for q in questions} == {"single", "multiple"}


def test_grading_needs_exactly_the_correct_set():
    questions = {q.id: q for q in load_questions()}
    multi = questions["what-improves"]
    assert multi.grade({"tail-itl", "separate"})
    assert not multi.grade({"tail-itl"}) and not multi.grade({"tail-itl", "separate", "throughput"})
    assert score(list(questions.values()), {"when-needed": {"services"}, "compute-bound": {"decode"}}) == 1


def test_measured_questions_quote_the_learners_number():
    q = next(q for q in load_questions() if q.measured)
    assert "4.2 s" in q.prompt("en", {q.measured: 4.2}) and "4,2 с" in q.prompt("ru", {q.measured: 4.2})
    assert q.prompt("en", {}) == q.text["en"]


@pytest.mark.parametrize("broken,message", [
    (lambda q: q[0].update(correct=["nope"]), "correct answers must be option ids"),
    (lambda q: q[0]["text"].pop("ru"), "needs non-empty text"),
    (lambda q: q[0].update(page="nowhere"), "page must be one of"),
    (lambda q: q[1].update(id=q[0]["id"]), "unique id"),
    (lambda q: q[0].update(correct=["students", "services"]), "exactly one correct answer"),
])
def test_schema_violations_are_caught(tmp_path, broken, message):
    data = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))
    broken(data)
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(QuizError, match=message):
        load_questions(path)


def test_every_text_exists_in_both_languages_with_the_same_placeholders():
    english, russian = texts("en"), texts("ru")
    assert english.keys() == russian.keys()
    for key in english:
        assert english[key].strip() and russian[key].strip(), key
        assert set(re.findall(r"{(\w+)}", english[key])) == set(re.findall(r"{(\w+)}", russian[key])), key
    assert set(LANGUAGES) == {"en", "ru"}


def test_numbers_are_written_the_way_each_language_writes_them():
    assert num("ru", 1234.5, ",.1f") == "1\u00a0234,5" and num("en", 1234.5, ",.1f") == "1,234.5"
    assert human_bytes("ru", 123_456_789) == "123,5 МБ" and human_bytes("en", 999) == "999 B"
    assert t("ru", "gpu_load", gpu=0, name="H200", util=7, used=1.26, total=139.8) == "GPU 0 H200: 7%, 1,3/139,8 ГиБ"
