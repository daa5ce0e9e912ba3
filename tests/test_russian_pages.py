"""Every page rendered in Russian shows no English label (the glossary's kept terms aside)."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.labels import foreign_words, visible_texts

APP = str(Path(__file__).resolve().parents[1] / "app.py")
PAGES = sorted(p.stem for p in (Path(APP).parent / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_a_russian_page_shows_no_english_label(page):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["lang"] = "ru"
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception
    assert foreign_words(visible_texts(at)) == set(), page
