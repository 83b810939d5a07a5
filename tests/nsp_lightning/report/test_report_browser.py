"""The report as a person sees it: opened from disk in headless Chromium (Debian package ``chromium``)."""

import io
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import SECTIONS, train

from nsp_lightning.report.html import report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
# Injected into a copy of the page before its own script: records script errors, failed
# resource loads (capture phase) and console.error calls in the DOM, and after loading counts
# the images that did not decode.
HOOK = """<script>
(function () {
  function mark(text) {
    var node = document.createElement('div');
    node.className = 'test-error';
    node.textContent = text;
    (document.body || document.documentElement).appendChild(node);
  }
  window.addEventListener('error', function (event) {
    mark('error: ' + (event.message || (event.target && event.target.tagName)));
  }, true);
  var consoleError = console.error;
  console.error = function () {
    mark('console.error: ' + Array.prototype.join.call(arguments, ' '));
    consoleError.apply(console, arguments);
  };
  window.addEventListener('load', function () {
    var broken = Array.prototype.filter.call(document.images, function (im) {
      return !im.complete || im.naturalWidth === 0;
    });
    document.body.setAttribute('data-test-images', String(document.images.length));
    document.body.setAttribute('data-test-broken-images', String(broken.length));
  });
})();
</script>"""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing: install the Debian package `chromium` to run browser tests"
)


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def console_messages(stderr: str) -> list[str]:
    # Chromium logs every console message and uncaught error as INFO:CONSOLE(...) lines.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("browser")
    # INCL=False so that every section, the graph rebuilds included, is rendered.
    return report(train(directory, INCL=False, epochs=3), directory / "report.html")


def instrument(page: Path, tmp_path: Path, extra: str = "") -> Path:
    """A copy of the page with the error hooks, and ``extra`` script run after the page's own."""
    text = page.read_text(encoding="utf-8")
    head = '<meta charset="utf-8">'
    text = text.replace(head, head + HOOK, 1)
    if extra:
        text = text.replace("</body></html>", f"<script>{extra}</script></body></html>", 1)
    instrumented = tmp_path / "instrumented.html"
    instrumented.write_text(text, encoding="utf-8")
    return instrumented


def dom(page: Path, tmp_path: Path, extra: str = "") -> str:
    result = chromium(instrument(page, tmp_path, extra), tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    assert 'class="test-error"' not in result.stdout
    return result.stdout


def visible_frames(dom_text: str) -> list[list[bool]]:
    films = [part.split("</section>")[0] for part in dom_text.split('<div class="film" ')[1:]]
    return [[("hidden" not in f) for f in re.findall(r'<figure class="frame"[^>]*>', film)] for film in films]


@pytest.mark.slow
def test_one_slider_moves_every_probe(page, tmp_path):
    # A person drags probe 0's slider to the second record: every probe's film shows it.
    drag = (
        "var s = document.querySelector('.film input[type=range]'); s.value = '1';"
        " s.dispatchEvent(new Event('input'));"
    )
    shown = dom(page, tmp_path, drag)
    assert visible_frames(shown) == [[False, True, False, False]] * 2
    outputs = re.findall(r"<output>(.*?)</output>", shown)
    assert len(outputs) == 1 and outputs[0].startswith("epoch 1 (global step")


@pytest.mark.slow
def test_the_epoch_grid_shows_every_record(page, tmp_path):
    shown = dom(page, tmp_path)
    grid = shown.split('<section id="grid">')[1].split("</section>")[0]
    tables = grid.split('<div class="grid">')[1:]
    assert len(tables) == 2  # a grid per probe
    for table in tables:
        header = re.findall(r'<th scope="col">(.*?)</th>', table)
        assert header == ["epoch 0", "epoch 1", "epoch 2", "epoch 3"]  # every record of the run
        rows = re.findall(r'<th scope="row">(.*?)</th>', table)
        assert rows[0].startswith("0: input") and rows[-1].startswith("5: fc") and len(rows) == 6
        assert table.count("<img") == 6 * 4
    assert 'data-test-broken-images="0"' in shown


def test_report_renders_in_chromium_without_errors(page, tmp_path):
    text = page.read_text(encoding="utf-8")
    instrumented = tmp_path / "instrumented.html"
    head = '<meta charset="utf-8">'
    instrumented.write_text(text.replace(head, head + HOOK, 1), encoding="utf-8")
    result = chromium(instrumented, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    dom = result.stdout
    assert 'class="test-error"' not in dom
    images = int(re.search(r'data-test-images="(\d+)"', dom).group(1))
    assert images == text.count("<img") > 0
    assert 'data-test-broken-images="0"' in dom
    assert re.findall(r'<section id="([a-z]+)">', dom) == SECTIONS + ["rebuilds"]
    # Every frame of a film sits in a box of one size, so that images do not jump while sliding.
    boxes = re.findall(r'<div class="box" style="([^"]*)">', dom)
    assert len(boxes) == 8 and len(set(boxes[:4])) == 1 and len(set(boxes[4:])) == 1
    # The slider script ran: controls shown, one frame of the 4 records visible per probe, the
    # last selected and named.
    films = [part.split("</section>")[0] for part in dom.split('<div class="film" ')[1:]]
    assert len(films) == 2
    # One slider for the section, on the first probe's film; it moves both.
    assert ['<div class="controls">' in film for film in films] == [True, False]
    for film in films:
        frames = re.findall(r'<figure class="frame"[^>]*>', film)
        assert len(frames) == 4
        assert [("hidden" in f) for f in frames] == [True, True, True, False]
    assert re.search(r"<output>epoch 3 \(global step \d+\)</output>", films[0])


@pytest.mark.slow
def test_screenshot_shows_the_rendered_page(page, tmp_path):
    shot = tmp_path / "report.png"
    result = chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    assert result.returncode == 0, result.stderr[-2000:]
    assert console_messages(result.stderr) == []
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).astype(int)
    assert pixels.shape == (2400, 1280, 3)
    # The styled header band (#1b1f24) on top, the light page below it, and charts in between.
    assert np.abs(pixels[10, 10] - [0x1B, 0x1F, 0x24]).max() <= 2
    assert np.abs(pixels[-10, 10] - [0xF6, 0xF7, 0xF9]).max() <= 2
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000
