"""The quiz: questions are data (quiz/questions.yaml), checked against a schema when loaded."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .i18n import LANGUAGES, num

QUESTIONS = Path(__file__).resolve().parents[1] / "quiz" / "questions.yaml"
PAGES = ("stages", "metrics", "chat", "problem", "fix", "travel", "lifetime", "summary", "planner")
KINDS = ("single", "multiple")


class QuizError(ValueError):
    pass


@dataclass(frozen=True)
class Question:
    id: str
    page: str
    kind: str
    text: dict
    options: list[dict]
    correct: frozenset[str]
    explanation: dict
    measured: str | None = None
    text_measured: dict | None = None

    def prompt(self, lang: str, results: dict) -> str:
        value = results.get(self.measured) if self.measured else None
        if value is not None and self.text_measured:
            return self.text_measured[lang].format(value=num(lang, value))
        return self.text[lang]

    def grade(self, chosen: set[str]) -> bool:
        return set(chosen) == self.correct


def _check_languages(qid: str, field: str, value) -> None:
    if not isinstance(value, dict) or set(value) != set(LANGUAGES) or not all(
            isinstance(v, str) and v.strip() for v in value.values()):
        raise QuizError(f"question {qid!r}: {field} needs non-empty text in {sorted(LANGUAGES)}")


def load_questions(path: Path = QUESTIONS) -> list[Question]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    questions, seen = [], set()
    for item in raw:
        qid = item.get("id")
        if not qid or qid in seen:
            raise QuizError(f"every question needs a unique id; got {qid!r}")
        seen.add(qid)
        if item.get("page") not in PAGES:
            raise QuizError(f"question {qid!r}: page must be one of {PAGES}")
        if item.get("kind") not in KINDS:
            raise QuizError(f"question {qid!r}: kind must be one of {KINDS}")
        _check_languages(qid, "text", item.get("text"))
        _check_languages(qid, "explanation", item.get("explanation"))
        options = item.get("options") or []
        ids = [o.get("id") for o in options]
        if len(options) < 2 or len(set(ids)) != len(ids):
            raise QuizError(f"question {qid!r}: needs at least two options with unique ids")
        for option in options:
            _check_languages(qid, f"option {option.get('id')!r}", {k: option.get(k) for k in LANGUAGES})
        correct = frozenset(item.get("correct") or [])
        if not correct or not correct <= set(ids):
            raise QuizError(f"question {qid!r}: correct answers must be option ids, got {sorted(correct)}")
        if item["kind"] == "single" and len(correct) != 1:
            raise QuizError(f"question {qid!r}: a single-choice question has exactly one correct answer")
        if item.get("measured"):
            _check_languages(qid, "text_measured", item.get("text_measured"))
        questions.append(Question(qid, item["page"], item["kind"], item["text"], options, correct,
                                  item["explanation"], item.get("measured"), item.get("text_measured")))
    return questions


def score(questions: list[Question], answers: dict[str, set[str]]) -> int:
    return sum(q.grade(answers[q.id]) for q in questions if q.id in answers)


def encode_answers(answers: dict[str, set[str]]) -> str:
    """Answers as one URL query value: "question:option+option,question:option"."""
    return ",".join(f"{qid}:{'+'.join(sorted(chosen))}" for qid, chosen in answers.items())


def decode_answers(text: str) -> dict[str, set[str]]:
    """encode_answers' inverse; whatever does not parse (an edited URL) is left out."""
    answers = {}
    for item in filter(None, text.split(",")):
        qid, _, chosen = item.partition(":")
        if qid and chosen:
            answers[qid] = set(chosen.split("+"))
    return answers
