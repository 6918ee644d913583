"""The HTML report opened in a real browser (headless Chromium, installed by `make test` where it can be):
every figure decodes, nothing is requested from the network, and no console error appears.

The report is loaded from a copy into which a Content-Security-Policy that allows only ``data:`` images
and inline styles is put, with a small script that records, once the page has loaded, each image's
decoded width, every blocked request (a ``securitypolicyviolation`` event: the report tried to fetch
something) and every console error or uncaught exception; Chromium's ``--dump-dom`` returns the page
with that record in it. The browser's own console log (``--enable-logging=stderr``) is checked too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from spikebench.report import build_report
from tests.studies.test_report import RANK, run, write_study

BROWSERS = ("chromium", "chromium-browser", "google-chrome")

PROBE = """<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<script>
window.__probe = {violations: [], errors: []};
document.addEventListener("securitypolicyviolation",
  e => window.__probe.violations.push(e.blockedURI + " (" + e.violatedDirective + ")"));
window.addEventListener("error", e => window.__probe.errors.push(String(e.message || e)));
const __error = console.error;
console.error = (...a) => { window.__probe.errors.push(a.map(String).join(" ")); __error(...a); };
window.addEventListener("load", () => {
  const p = window.__probe;
  p.images = Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);
  p.resources = performance.getEntriesByType("resource").map(r => r.name);
  const out = document.createElement("pre");
  out.id = "__probe";
  out.textContent = JSON.stringify(p);
  document.body.appendChild(out);
});
</script>
"""


def browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def report_with_figures(tmp_path: Path) -> Path:
    """A report of constructed records with every kind of figure: locality, robustness, attacks, forest."""
    runs = []
    for seed in (0, 1, 2):
        for r in RANK:
            for rec in (False, True):
                runs.append(
                    run(
                        r,
                        rec,
                        seed,
                        acc=0.9 - 0.02 * RANK[r] + 0.004 * seed,
                        attacks={
                            "pgd-exact": {0.03: 0.3 + 0.05 * rec + 0.01 * seed, 0.1: 0.1},
                            "square": {0.03: 0.6, 0.1: 0.4},
                        },
                    )
                )
    keys = [r.key for r in runs]
    study = write_study(
        tmp_path,
        runs,
        {"tradeoff": keys, "recurrence": keys, "attacks": [r.key for r in runs if not r.recurrent]},
    )
    return build_report(study)["html"]


def open_in_browser(exe: str, html: Path, tmp_path: Path) -> tuple[dict, str]:
    text = html.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    profile = tmp_path / "profile"
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probed.as_uri(),
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, f"the page did not finish loading (exit {proc.returncode}): {proc.stderr[-2000:]}"
    import html as html_lib

    return json.loads(html_lib.unescape(m.group(1))), proc.stderr


def test_report_in_headless_chromium(tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip("no Chromium on PATH (`make test` installs Debian's chromium when run as root with apt)")
    html = report_with_figures(tmp_path)
    probe, stderr = open_in_browser(exe, html, tmp_path)
    n_img = html.read_text().count("<img ")
    assert n_img >= 4 and len(probe["images"]) == n_img
    for alt, complete, width, height in probe["images"]:
        assert complete and width > 0 and height > 0, f"figure {alt!r} did not decode"
    assert probe["violations"] == [], "the report requested resources: " + ", ".join(probe["violations"])
    assert probe["resources"] == []  # nothing fetched at all: the page is one self-contained file
    assert probe["errors"] == []
    console = [line for line in stderr.splitlines() if "CONSOLE" in line and "__probe" not in line]
    assert console == [], "\n".join(console)
