"""Every text the learner sees lives in lab/texts/<language>.yaml: one file per language."""
from __future__ import annotations

import numbers
import string
from functools import cache
from pathlib import Path

import yaml

LANGUAGES = {"en": "English", "ru": "Русский"}
TEXTS = Path(__file__).with_name("texts")
# The decimal mark, then the thousands separator: Russian writes 1 234,5 where English writes 1,234.5.
SEPARATORS = {"en": ".,", "ru": ",\u00a0"}


@cache
def texts(lang: str) -> dict[str, str]:
    if lang not in LANGUAGES:
        raise ValueError(f"language must be one of {sorted(LANGUAGES)}, got {lang!r}")
    return yaml.safe_load((TEXTS / f"{lang}.yaml").read_text(encoding="utf-8"))


def num(lang: str, value: float, spec: str = "") -> str:
    """A number as the learner's language writes it: format(value, spec), then its separators."""
    decimal, thousands = SEPARATORS[lang]
    return format(value, spec).translate(str.maketrans({".": decimal, ",": thousands}))


def human_bytes(lang: str, n: float) -> str:
    """`n` bytes in decimal units, named and written in the learner's language (texts: byte_units)."""
    names = t(lang, "byte_units").split()
    power = 0
    while n >= 1000 and power < len(names) - 1:
        n, power = n / 1000, power + 1
    return f"{num(lang, n, ',.1f' if power else ',.0f')} {names[power]}"


class Fixed(float):
    """A measured value rounded for a sentence: it formats with its own decimals (unless a format says
    otherwise), and t() writes it the learner's way, 2.16 or 2,16."""

    def __new__(cls, value: float, digits: int):
        fixed = super().__new__(cls, value)
        fixed.digits = digits
        return fixed

    def __format__(self, spec: str) -> str:
        return float.__format__(self, spec or f".{self.digits}f")

    def __str__(self) -> str:
        return format(self)


class _Numbers(string.Formatter):
    """str.format that writes the numbers it is given in one language's way."""

    def __init__(self, lang: str):
        self.lang = lang

    def format_field(self, value, spec: str) -> str:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):   # numpy's too
            return num(self.lang, value, spec)
        return super().format_field(value, spec)


def t(lang: str, key: str, **values) -> str:
    text = texts(lang)[key]
    return _Numbers(lang).format(text, **values) if values else text
