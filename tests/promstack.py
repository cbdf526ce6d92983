"""A real Prometheus and node_exporter (Debian packages) on localhost, for tests.

node_exporter serves the ``*.prom`` files of a folder (its textfile collector,
nothing else); Prometheus scrapes it every second. Both are started by
:func:`promstack` and stopped at the end of its block.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from needs import require_tool


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, expr: str) -> dict:
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())

    def series_names(self) -> set[str]:
        with urllib.request.urlopen(f"{self.url}/api/v1/label/__name__/values", timeout=10) as r:
            return set(json.loads(r.read())["data"])


@contextmanager
def promstack(textfile_dir: Path, workdir: Path, wait_for: str = "contimg_status_timestamp_seconds"):
    """Start node_exporter (textfile collector on ``textfile_dir``) and Prometheus scraping it;
    yield a :class:`Prometheus` once ``wait_for`` has been scraped."""
    exporter_bin = require_tool("prometheus-node-exporter")
    prometheus_bin = require_tool("prometheus")
    exporter_port, prom_port = _free_port(), _free_port()
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: contimg\n    static_configs: [{{targets: ['127.0.0.1:{exporter_port}']}}]\n"
    )
    procs = []
    logs = [open(workdir / "node_exporter.log", "w"), open(workdir / "prometheus.log", "w")]
    try:
        procs.append(subprocess.Popen(
            [exporter_bin, f"--web.listen-address=127.0.0.1:{exporter_port}", "--collector.disable-defaults",
             "--collector.textfile", f"--collector.textfile.directory={textfile_dir}"],
            stdout=logs[0], stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen(
            [prometheus_bin, f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=logs[1], stderr=subprocess.STDOUT))
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        deadline = time.monotonic() + 90
        while True:
            try:
                if prom.query(wait_for)["data"]["result"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("Prometheus never scraped the metrics: "
                                   + (workdir / "prometheus.log").read_text()[-2000:]
                                   + (workdir / "node_exporter.log").read_text()[-2000:])
            time.sleep(0.5)
        yield prom
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        for f in logs:
            f.close()
