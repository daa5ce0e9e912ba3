"""Every text the learner sees lives in lab/texts/<language>.yaml: one file per language."""
from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

LANGUAGES = {"en": "English", "ru": "Русский"}
TEXTS = Path(__file__).with_name("texts")


@cache
def texts(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {sorted(LANGUAGES)}, got {lang!r}")
    return yaml.safe_load((TEXTS / f"{lang}.yaml").read_text(encoding="utf-8"))


def t(lang: str, key: str, **values) -> str:
    text = texts(lang)[key]
    return text.format(**values) if values else text
