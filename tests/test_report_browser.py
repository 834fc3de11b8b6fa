"""The HTML report in a real headless browser (Debian's chromium): it loads without errors, requests
nothing outside itself, and shows its plots. Skipped when /usr/bin/chromium is absent."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from deepemhancer.evaluate import evaluate
from deepemhancer.mapio import Geometry, Map
from deepemhancer.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)")

SHAPE = (32, 32, 32)
# Added to a copy of the report only: the report itself carries no script. It records image sizes
# after the load event, uncaught errors and any resource the page's security policy refused.
PROBE = """<script>
var marks = [];
function mark(text) { marks.push(text); var p = document.getElementById('probe'); if (p) p.textContent = marks.join('|'); }
window.addEventListener('error', function (e) { mark('js-error ' + e.message); });
document.addEventListener('securitypolicyviolation', function (e) { mark('csp-violation ' + e.blockedURI); });
window.addEventListener('load', function () {
  var p = document.createElement('p'); p.id = 'probe'; document.body.appendChild(p);
  var images = Array.prototype.slice.call(document.images);
  var shown = images.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0; });
  mark('images ' + shown.length + '/' + images.length);
  images.forEach(function (i) { mark('size ' + i.naturalWidth + 'x' + i.naturalHeight); });
});
</script>"""


def as_map(data: np.ndarray) -> Map:
    return Map(np.asarray(data, dtype=np.float32), Geometry.for_grid(SHAPE, 1.0))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report with four figures: half-map FSC, halves check, Guinier plot and central sections."""
    rng = np.random.default_rng(0)
    idx = np.indices(SHAPE)
    signal = np.exp(-np.sum((idx - 15.5) ** 2, axis=0) / (2 * 1.5**2))
    halves = [as_map(signal + rng.normal(0, 0.02, SHAPE)) for _ in range(2)]
    shared = rng.normal(0, 0.02, SHAPE)
    enhanced = (as_map(halves[0].data + shared), as_map(halves[1].data + shared))
    maps = {"average": as_map(0.5 * (halves[0].data + halves[1].data)), "signal": as_map(signal)}
    results = evaluate(maps, (halves[0], halves[1]), enhanced_halves=enhanced)
    folder = tmp_path_factory.mktemp("browser") / "report"
    return write_report(results, folder, maps)["html"]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
               "--v=0", "--virtual-time-budget=10000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_report_loads_without_errors_and_shows_every_plot(report, tmp_path):
    page = report.read_text()
    assert "<script" not in page
    policy = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    assert policy in page
    probed = tmp_path / "probed.html"
    # The page's own policy forbids scripts: the copy lets only the inline probe run, nothing else changes.
    probed.write_text(page.replace(policy, policy + "; script-src 'unsafe-inline'", 1)
                      .replace("</head>", PROBE + "</head>", 1))
    run = chromium(tmp_path, "--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    probe = re.search(r'<p id="probe">([^<]*)</p>', run.stdout)
    assert probe, run.stdout[-2000:]
    marks = probe.group(1).split("|")
    assert marks[0] == "images 4/4", marks
    assert not [m for m in marks if m.startswith(("js-error", "csp-violation"))]
    sizes = [tuple(map(int, m.split()[1].split("x"))) for m in marks if m.startswith("size")]
    assert len(sizes) == 4 and all(w >= 600 and h >= 300 for w, h in sizes)
    console = [line for line in run.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line
               or "Refused to" in line]
    assert not console, console


def test_report_renders_the_plots_on_screen(report, tmp_path):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    run = chromium(tmp_path, "--window-size=1000,2600", f"--screenshot={shot}", report.as_uri())
    assert run.returncode == 0 and shot.exists(), run.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    # matplotlib's first two line colours, as the FSC and Guinier plots draw them
    for colour in ((31, 119, 180), (255, 127, 14)):
        close = np.all(np.abs(pixels * 255 - np.array(colour)) < 12, axis=-1)
        assert close.sum() > 200, colour
    grey_levels = np.unique(np.round(pixels.mean(axis=-1) * 255))
    assert grey_levels.size > 100  # the central sections' grey levels
