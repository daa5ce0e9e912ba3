"""The Streamlit app renders in both languages and generates with the real engine."""
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.mark.parametrize("lang,button", [("en", "Generate"), ("ru", "Сгенерировать")])
def test_playground_generates_and_shows_timings(lang, button):
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state["lang"] = lang
    at.switch_page("pages/playground.py")
    at.run()
    assert not at.exception
    assert at.button(key="generate").label == button
    at.slider(key="max_tokens").set_value(8)
    at.button(key="generate").click().run()
    assert not at.exception
    assert at.text[0].value.strip(), "the answer is shown as plain text, never as Markdown"
    values = {m.label: m.value for m in at.metric}
    assert values["TTFT"].endswith("ms" if lang == "en" else "мс")
    assert int(values["Tokens" if lang == "en" else "Токены"]) <= 8


def test_empty_prompt_shows_a_clear_error():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/playground.py")
    at.run()
    at.text_area(key="prompt").set_value("   ")
    at.button(key="generate").click().run()
    assert not at.exception
    assert "all chat messages are empty" in at.error[0].value


PAGES = sorted(p.name for p in (Path(APP).parent / "pages").glob("*.py"))


@pytest.mark.parametrize("page", PAGES)
def test_every_page_draws_the_frame_language_selector_and_menu(page):
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page(f"pages/{page}")
    at.run()
    assert not at.exception
    assert at.sidebar.radio[0].options == ["English", "Русский"]
    links = [link.proto.label for link in at.sidebar.get("page_link")]
    assert len(links) == len(PAGES) and "9. Cluster planner" in links
    at.sidebar.radio[0].set_value("ru").run()
    assert not at.exception
    assert "9. Планировщик кластера" in [link.proto.label for link in at.sidebar.get("page_link")]
    assert any(c in "абвгдеёжзийклмнопрстуфхцчшщъыьэюя" for c in at.title[0].value.lower())


def test_the_language_chosen_on_one_page_holds_on_the_next():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/learn_8_summary.py")
    at.run()
    at.sidebar.radio[0].set_value("ru").run()
    at.switch_page("pages/quiz.py")
    at.run()
    assert not at.exception
    assert at.sidebar.radio[0].value == "ru" and at.title[0].value == "10. Квиз"


def test_the_address_keeps_the_language_so_a_reload_does_too():
    at = AppTest.from_file(APP, default_timeout=300)
    at.switch_page("pages/learn_2_metrics.py")
    at.run()
    at.sidebar.radio[0].set_value("ru").run()
    assert at.query_params["lang"] == "ru"
    assert all(link.proto.query_string == "lang=ru" for link in at.sidebar.get("page_link"))
    reloaded = AppTest.from_file(APP, default_timeout=300)   # a new session, from the same address
    reloaded.query_params["lang"] = "ru"
    reloaded.switch_page("pages/learn_2_metrics.py")
    reloaded.run()
    assert reloaded.sidebar.radio[0].value == "ru" and "Метрики" in reloaded.title[0].value
