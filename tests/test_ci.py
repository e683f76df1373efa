"""CI installs everything the tests need, and a test CI relies on fails instead of
skipping when its tool is missing (issue 19)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("ffmpeg", "espeak-ng", "chromium", "chromedriver", "text2wave", "flite")
SHELL_TOOLS = ("dirname", "tr", "id")


def fake_path(tmp_path: Path, present: tuple[str, ...]) -> str:
    """A PATH holding only the given tools (stubs) and the shell tools the script uses."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in present:
        stub = bin_dir / tool
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    for tool in SHELL_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    return str(bin_dir)


def voices(tmp_path: Path, names: tuple[str, ...]) -> Path:
    root = tmp_path / "voices"
    for name in names:
        (root / name).mkdir(parents=True)
    return root


def check(tmp_path: Path, present: tuple[str, ...], voice_dirs: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {"PATH": fake_path(tmp_path, present), "FESTIVAL_VOICES": str(voices(tmp_path, voice_dirs))}
    return subprocess.run(["/bin/bash", str(ROOT / ".ci" / "install"), "--check"], capture_output=True,
                          text=True, env=env, timeout=30)


ALL_VOICES = ("us/cmu_us_slt_arctic_hts", "english/kal_diphone")


def test_install_sees_chromium_without_its_driver(tmp_path):
    r = check(tmp_path, tuple(t for t in TOOLS if t != "chromedriver"), ALL_VOICES)
    assert r.returncode == 1 and r.stdout.split() == ["missing:", "chromium-driver"]


def test_install_sees_each_missing_tool_and_voice(tmp_path):
    r = check(tmp_path, ("ffmpeg", "chromium", "chromedriver"), ("english/kal_diphone",))
    assert r.returncode == 1
    assert r.stdout.split() == ["missing:", "espeak-ng", "festival", "festvox-us-slt-hts", "flite"]


def test_install_with_everything_present_installs_nothing(tmp_path):
    r = check(tmp_path, TOOLS, ALL_VOICES)
    assert r.returncode == 0 and r.stdout.strip() == "missing: nothing"


def test_ci_run_requires_the_tools():
    assert "DISAMB_REQUIRE_TOOLS=1 python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def run_browser_test(tmp_path: Path, require: bool) -> subprocess.CompletedProcess:
    """The real-browser review test on a machine with chromium but no chromium-driver."""
    env = dict(os.environ, PATH=fake_path(tmp_path, ("chromium",)), PYTHONPATH=str(ROOT))
    env.pop("DISAMB_REQUIRE_TOOLS", None)
    if require:
        env["DISAMB_REQUIRE_TOOLS"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_review_browser.py"], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=300)


def test_browser_test_fails_under_ci_when_the_driver_is_missing(tmp_path):
    r = run_browser_test(tmp_path, require=True)
    assert r.returncode != 0, r.stdout
    assert "chromium-driver" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]


def test_browser_test_skips_outside_ci_when_the_driver_is_missing(tmp_path):
    r = run_browser_test(tmp_path, require=False)
    assert r.returncode in (0, 5) and "1 skipped" in r.stdout.splitlines()[-1], r.stdout  # 5: nothing ran
