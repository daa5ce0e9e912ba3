"""Walk the guided pages 1, 4, 5 and 6 and the quiz in a real browser as a learner would, in English and
then in Russian, and save the screenshots the README and docs/lessons.md show (docs/lesson-*.png, docs/quiz*.png).

Starts its own lab on a free port, drives Debian's Chromium with Playwright, stops the lab after.
Takes about five minutes on 2 cores: each page runs its experiment on the real engine.

    .venv/bin/python tools/lesson_screenshots.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.reference_tools import chromium_page, free_port, server  # noqa: E402

DOCS = ROOT / "docs"
PAGES = [("learn_1_stages", "1. Two stages", "Measure prefill and decode"),
         ("learn_4_problem", "4. The problem", "Run colocated"),
         ("learn_5_fix", "5. The fix: disaggregated prefill", "Run it"),
         ("learn_6_travel", "6. How the KV cache travels", "Measure the transports of this machine")]
RUSSIAN_TITLES = {"learn_4_problem": "4. Проблема", "learn_5_fix": "5. Решение: disaggregated prefill"}


def quiz(page, title: str, mine: str, screenshot: str) -> None:
    """Open the quiz, check that the questions quote this session's runs, answer one and see it graded."""
    page.get_by_role("link", name=title).first.click()
    expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=120_000)
    expect(page.get_by_text(mine).first).to_be_visible(timeout=120_000)
    quoting = page.get_by_text(mine).count()
    if quoting < 5:
        raise AssertionError(f"only {quoting} quiz questions quote the learner's own runs")
    options = page.get_by_role("radiogroup", name=mine).first   # a measured question's options
    options.locator("label").first.click()
    question = options.locator("xpath=ancestor::div[@data-testid='stVerticalBlock'][1]")
    question.get_by_role("button").first.click()
    expect(question.locator("[data-testid='stAlert']").first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(DOCS / screenshot))


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
                   "--server.headless", "true"]
        with server(command, port, env={"PDLAB_RUNS": runs, "PATH": "/usr/bin:/bin"}, health="/_stcore/health"):
            with sync_playwright() as p:
                # Streamlit scrolls inside the page, so a full-page shot shows one screen: use a tall window.
                browser, page = chromium_page(p, 1400, 3400)
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_timeout(3000)
                for name, title, button in PAGES:   # one session: page 4 predicts from page 1, 5 compares with 4
                    page.get_by_role("link", name=title).first.click()
                    expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=60_000)
                    page.get_by_role("button", name=button).click()
                    done = "Measured here" if name == "learn_6_travel" else "What your run shows"
                    expect(page.get_by_text(done).first).to_be_visible(timeout=300_000)
                    page.wait_for_timeout(2000)
                    page.screenshot(path=str(DOCS / f"lesson-{name}.png"))
                quiz(page, "10. Quiz", "Your own measurements", "quiz.png")
                page.get_by_text("Русский").first.click()
                page.wait_for_timeout(3000)
                for name, title in RUSSIAN_TITLES.items():
                    page.get_by_role("link", name=title).first.click()
                    expect(page.get_by_role("heading", name=title).first).to_be_visible(timeout=60_000)
                    expect(page.get_by_text("Что показывает ваш прогон").first).to_be_visible(timeout=60_000)
                    page.wait_for_timeout(2000)
                    page.screenshot(path=str(DOCS / f"lesson-{name}-ru.png"))
                quiz(page, "10. Квиз", "Ваши собственные измерения", "quiz-ru.png")
                browser.close()


if __name__ == "__main__":
    main()
