"""A real browser (Debian's headless Chromium, driven by Playwright) uses the running lab:
start the engine, start users, inject a long prompt, see the ITL chart mark it; save a screenshot."""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.reference_tools import CHROMIUM, chromium_page, free_port
ROOT = Path(__file__).resolve().parents[1]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    if os.environ.get("CI"):
        raise  # CI installs it: missing there is a failure, not a skip
    pytest.skip("playwright is not installed (`make test` installs it)", allow_module_level=True)
if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is missing: `apt-get install -y chromium` (as .ci/run does)", allow_module_level=True)


@pytest.fixture
def lab_url(tmp_path):
    port = free_port()
    env = {**os.environ, "PDLAB_RUNS": str(tmp_path / "runs")}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                               str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    yield url
    lab = psutil.Process(server.pid)
    listening = {c.laddr.ip for c in lab.net_connections("inet") if c.status == "LISTEN"}
    engine = lab.children(recursive=True)
    server.terminate()   # what Ctrl-C, systemd or a closed terminal do to `make lab`
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        server.kill()
    assert listening == {"127.0.0.1"}, f"the lab must listen on this machine only, not {listening}"
    _, alive = psutil.wait_procs(engine, timeout=30)
    assert not alive, f"the lab's engine processes outlived it: {alive}"


def test_browser_starts_engine_injects_and_sees_the_itl_chart_update(lab_url, tmp_path):
    screenshot = Path(os.environ.get("PDLAB_SCREENSHOT", tmp_path / "dashboard.png"))
    with sync_playwright() as p:
        browser, page = chromium_page(p, 1500, 1900)
        page.goto(lab_url)
        page.get_by_role("button", name="Start engine").click()
        expect(page.get_by_text("worker-0 (colocated")).to_be_visible(timeout=120_000)
        page.get_by_role("button", name="Start users").click()
        expect(page.get_by_text(re.compile(r"ITL p50 \d+ ms"))).to_be_visible(timeout=60_000)
        page.wait_for_timeout(8_000)  # a few seconds of steady streams before the long prompt
        page.get_by_role("button", name="Inject long prompt").click()
        # The ITL chart shades the long prompt's prefill: a 'long prompt' annotation appears on it.
        expect(page.get_by_text("long prompt", exact=True).first).to_be_visible(timeout=90_000)
        # Its first token ends the stall: the page stops counting its prefill, and the streams go on.
        expect(page.get_by_text("has been prefilling")).to_have_count(0, timeout=120_000)
        page.wait_for_timeout(5_000)  # let the recovery show on the charts
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        page.get_by_role("button", name="Stop users").click()
        browser.close()   # the engine is left running: stopping the lab must stop it
    assert screenshot.stat().st_size > 50_000


def test_a_deep_link_on_a_fresh_server_shows_the_language_selector_and_switches_language(lab_url, tmp_path):
    with sync_playwright() as p:
        browser, page = chromium_page(p, 1400, 900)
        page.goto(f"{lab_url}/planner")
        expect(page.get_by_role("heading", name="Cluster planner", exact=False).first).to_be_visible(timeout=60_000)
        # The lab's own menu, not the file names Streamlit would list for the pages/ folder.
        expect(page.get_by_role("link", name="4. The problem", exact=True)).to_be_visible()
        expect(page.get_by_text("learn 1 stages")).to_have_count(0)
        page.get_by_text("Русский").click()
        expect(page.get_by_role("heading", name="Планировщик", exact=False).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "planner-deep-link.png"))
        browser.close()
