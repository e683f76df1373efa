"""End to end in a real browser: `disamb review` started from the CLI, driven by
headless Chromium through Selenium with the keyboard, killed and restarted.

Skipped (with the reason) only when Chromium, its driver or Selenium is absent, and
never under CI (.ci/run), where a missing browser fails the run.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_review import EVIL, make_review_data
from tests.conftest import skip_unless_ci

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
if not CHROMIUM or not CHROMEDRIVER:
    skip_unless_ci("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
try:
    from selenium import webdriver
except ImportError:
    skip_unless_ci("needs selenium (pip install selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class ReviewServer:
    """`python -m disamb.cli review ...` in a subprocess; knows its URL once it prints it."""

    def __init__(self, recordings: Path, labels: Path, log: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "disamb.cli", "review", str(recordings), str(labels), "--port", "0"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self.log,
        )
        self.url = self._wait_for_url(timeout=60)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                seen += os.read(self.proc.stdout.fileno(), 4096)
                m = re.search(rb"open (http://127\.0\.0\.1:\d+/)", seen)
                if m:
                    return m.group(1).decode()
        self.kill()
        raise AssertionError(f"server did not print its address: {seen!r}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, so only what was fsync'd survives."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self.log.close()


@pytest.fixture()
def browser(tmp_path: Path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1100,900", f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def current_note(driver) -> str:
    return driver.find_element(By.ID, "note-id").text


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def wait_note_change(driver, old: str) -> str:
    WebDriverWait(driver, 10).until(lambda d: current_note(d) not in ("", old))
    return current_note(driver)


def test_review_in_headless_chromium(tmp_path, browser):
    data = make_review_data(tmp_path / "data")
    server = ReviewServer(data["recordings"], data["labels"], tmp_path / "server.log")
    try:
        with urllib.request.urlopen(server.url + "api/state", timeout=10) as r:
            notes = json.load(r)["notes"]
        queue = [n["id"] for n in notes]

        browser.get(server.url)
        WebDriverWait(browser, 15).until(lambda d: current_note(d) != "")
        assert current_note(browser) == queue[0]
        assert "1–9" in browser.find_element(By.CLASS_NAME, "keys").text.replace("\n", "")

        # the clip's source loads: the request succeeds with an audio type, and the
        # element decodes its metadata (nothing is played)
        fetched = browser.execute_async_script(
            """const done = arguments[arguments.length - 1];
               const p = document.getElementById('player');
               fetch(p.src, {cache: "no-store"}).then(r => done({status: r.status, type: r.headers.get('content-type')}))
                           .catch(e => done({error: String(e)}));"""
        )
        assert fetched == {"status": 200, "type": "audio/wav"}
        WebDriverWait(browser, 15).until(
            lambda d: d.execute_script("const p = document.getElementById('player'); return p.readyState >= 1 && p.duration > 0")
        )
        assert browser.execute_script("return document.getElementById('player').paused") is True
        duration = browser.execute_script("return document.getElementById('player').duration")
        assert duration == pytest.approx(0.6, abs=0.05)

        # untrusted chat text renders as text: walk to the note holding it with the arrow keys
        hops = queue.index("v00")
        for _ in range(hops):
            press(browser, Keys.ARROW_RIGHT)
        WebDriverWait(browser, 5).until(lambda d: current_note(d) == "v00")
        rows = browser.find_elements(By.CSS_SELECTOR, "#cands li")
        assert rows[1].find_element(By.CLASS_NAME, "text").text == EVIL
        assert browser.find_elements(By.CSS_SELECTOR, "#cands script, #cands img") == []
        assert browser.title == "disamb review"
        for _ in range(hops):
            press(browser, Keys.ARROW_LEFT)
        WebDriverWait(browser, 5).until(lambda d: current_note(d) == queue[0])

        # three answers by keyboard: third candidate, "none of these", tenth candidate
        assert len(browser.find_elements(By.CSS_SELECTOR, "#cands li")) == 11  # ten candidates + none of these
        note = queue[0]
        expected = []
        for k, (key, index) in enumerate((("3", 2), ("n", None), ("0", 9))):
            expected.append((note, None if index is None else notes[k]["candidates"][index]["id"]))
            press(browser, key)
            note = wait_note_change(browser, note)
        assert note == queue[3]
        stats = browser.find_element(By.ID, "stats").text
        assert "answered 3" in stats

        # skipping moves on without writing anything
        press(browser, "s")
        assert wait_note_change(browser, note) == queue[4]

        rows = [json.loads(line) for line in data["gold"].read_text("utf-8").splitlines()]
        assert [(r["id"], r["label_id"]) for r in rows] == expected
        browser.save_screenshot(str(tmp_path / "review.png"))
    finally:
        server.kill()

    # a killed server loses nothing: a new one resumes at the fourth note
    server = ReviewServer(data["recordings"], data["labels"], tmp_path / "server.log")
    try:
        browser.get(server.url)
        WebDriverWait(browser, 15).until(lambda d: current_note(d) != "")
        assert current_note(browser) == queue[3]
        assert "answered 3" in browser.find_element(By.ID, "stats").text
        # the previous note is the last one answered, shown with the answer it got
        press(browser, Keys.ARROW_LEFT)
        WebDriverWait(browser, 5).until(lambda d: current_note(d) == queue[2])
        chosen = browser.find_elements(By.CSS_SELECTOR, "#cands li.chosen")
        assert [li.get_attribute("data-index") for li in chosen] == ["9"]
    finally:
        server.kill()
