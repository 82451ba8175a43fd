"""The HTML report in a real browser (headless Chromium): it renders, runs without a console
error, and hovering a front member shows its details."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import matplotlib.image
import optuna
import pytest
from test_report import make_study

from autocompress import pareto, report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
]  # fmt: skip
# Page console messages: "CONSOLE(12)" in older Chromium logs, "CONSOLE:12]" in newer ones.
CONSOLE = re.compile(r"CONSOLE[(:]\d+|Uncaught")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed")
    return make_study(tmp_path_factory.mktemp("browser"))


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "profile"
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if CONSOLE.search(line)]
    assert errors == [], errors
    return result


def test_report_renders_without_console_errors(study: optuna.Study, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(report.report_html(study))
    shot = tmp_path / "report.png"
    chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1200,1600")
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1600, 1200)
    colours = {tuple(p) for p in pixels[::8, ::8, :3].reshape(-1, 3).round(2).tolist()}
    assert len(colours) > 50  # text, the plot's markers, the heat map: not a blank page


def test_hovering_a_front_member_shows_its_details(study: optuna.Study, tmp_path: Path) -> None:
    """Chromium cannot move a mouse from the command line, so the page hovers itself."""
    hover = (
        "<script>document.querySelector('#front-plot [data-trial]')"
        ".dispatchEvent(new Event('mouseenter'));</script></body>"
    )
    page = tmp_path / "hover.html"
    page.write_text(report.front_html(study).replace("</body>", hover))
    dom = chromium(tmp_path, page, "--dump-dom").stdout
    shown = re.search(r'<div id="front-info">(.*?)</div>', dom, re.S)
    assert shown is not None
    first = pareto.front(study)[0]
    assert shown.group(1).startswith(f"trial {first.trial} (Pareto front)\n")
    assert f"compression ratio {first.ratio:.1f}x" in shown.group(1)
