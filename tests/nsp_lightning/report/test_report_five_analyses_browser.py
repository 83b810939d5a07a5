"""The five-analysis digits report at 1,400 px: no sideways scroll, at most 3 MB, one slider per analysis."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from five_analyses import five_analysis_run
from test_report_browser import CHROMIUM, FLAGS, console_messages

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install the Debian package `chromium`"),
]

DOCS = Path(__file__).resolve().parents[3] / "docs"
# Written into the page's DOM after loading, read back with --dump-dom.
MEASURE = (
    "<script>window.addEventListener('load', function () {"
    " document.body.setAttribute('data-scroll-width', document.documentElement.scrollWidth);"
    " document.body.setAttribute('data-inner-width', window.innerWidth); });</script>"
)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("five")
    run = five_analysis_run(root)
    # As a user runs it, from the log directory: the page names the run as given.
    relative = run.relative_to(root)
    command = [sys.executable, "-m", "nsp_lightning.report.cli", str(relative), "-o", "report.html", "-q"]
    subprocess.run(command, cwd=root, check=True, capture_output=True, text=True, timeout=600)
    return root / "report.html"


def test_nine_records_of_five_analyses_fit_in_3_mb(page):
    text = page.read_text(encoding="utf-8")
    ids = set(re.findall(r'<section id="([a-z-]+)">', text))
    assert {"heatmaps", "attribution", "feature-vis", "linear-regions", "response-map"} <= ids
    assert "epoch 8 (global step" in text  # nine records: the baseline and 8 epochs
    assert page.stat().st_size <= 3_000_000


def test_at_most_one_slider_per_analysis(page):
    text = page.read_text(encoding="utf-8")
    for section in text.split("<section ")[1:]:
        name = re.match(r'id="([a-z-]+)"', section).group(1)
        assert section.count('type="range"') <= 1, name
    assert text.count('type="range"') == 5  # spectrum heatmaps and the four other analyses


def test_no_sideways_scroll_at_1400_px_and_screenshot(page, tmp_path):
    measured = page.with_name("measured.html")
    measured.write_text(page.read_text(encoding="utf-8").replace("</body></html>", MEASURE + "</body></html>", 1),
                        encoding="utf-8")
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000",
               "--virtual-time-budget=5000", "--dump-dom", measured.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    scroll = int(re.search(r'data-scroll-width="(\d+)"', result.stdout).group(1))
    inner = int(re.search(r'data-inner-width="(\d+)"', result.stdout).group(1))
    assert inner == 1400 and scroll <= inner
    shot = tmp_path / "report.png"
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--hide-scrollbars",
               "--window-size=1400,2000", "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and shot.stat().st_size > 10_000
    DOCS.mkdir(exist_ok=True)
    (DOCS / "report_screenshot.png").write_bytes(shot.read_bytes())
