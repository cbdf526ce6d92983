"""Building the Snakemake report of a run and checking it, shared by the report tests."""

from __future__ import annotations

import base64
import json
import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd


def build_report(snakemake_exe: Path, repo_root: Path, workdir: Path, config: Path) -> Path:
    """``snakemake summary`` then ``snakemake summary --report`` (what ``make report`` does)."""
    base = [str(snakemake_exe), "summary", "-s", str(repo_root / "Snakefile"), "-d", str(workdir), "--configfile",
            str(repo_root / "config" / "config.yaml"), str(config)]  # fmt: skip
    out = subprocess.run([*base, "--cores", "1", "--forcerun", "summary"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    html = workdir / "report.html"
    out = subprocess.run([*base, "--report", str(html)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return html


def read_table(path: Path) -> pd.DataFrame:
    """The one table of an HTML page written by dsa110_contimg.monitoring.report.write_table."""
    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    parser = Cells()
    parser.feed(path.read_text())
    header, *rows = parser.rows
    return pd.DataFrame(rows, columns=header)


def report_results(html: Path) -> dict[str, dict]:
    """The report's embedded results (file name -> entry with its data URI)."""
    text = html.read_text()
    start = text.index("var results = ", text.index('<script id="results">')) + len("var results = ")
    results, _ = json.JSONDecoder().raw_decode(text[start:])
    return {Path(key).name: value for key, value in results.items()}


def decoded(entry: dict) -> bytes:
    return base64.b64decode(entry["data_uri"].split(",", 1)[1])


def open_in_browser(chromium: str, html: Path, screenshot: Path) -> None:
    """Load the report in headless chromium: no script error, the categories rendered by
    its script, a screenshot saved for people to look at."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--window-size=1400,1000"]
    out = subprocess.run([chromium, *flags, "--enable-logging=stderr", "--v=0", f"--screenshot={screenshot}",
                          html.as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if "CONSOLE" in line and re.search("Uncaught|Error", line)]
    assert not errors, errors
    assert screenshot.stat().st_size > 10_000
    dom = subprocess.run([chromium, *flags, "--dump-dom", html.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    for category in ("1. Observations", "2. Images", "3. Calibration", "4. Variability", "5. Mosaics"):
        assert category in dom, f"{category} not rendered"
