"""The rolling run end to end: `contimg run` called repeatedly on a raw folder that
holds a corrupt group, a group whose data are all zero (its processing fails), a
group still being written and good groups, with a real local webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h5py
import pandas as pd
import pytest
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import naming
from dsa110_contimg.raw.grouping import group_files, raw_names
from dsa110_contimg.rolling.lock import run_lock

SECRET = "s3cret-hook"


class Receiver:
    """A webhook receiver on localhost that keeps every JSON body it gets (and checks signatures)."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stamp = self.headers["X-Contimg-Timestamp"]
                want = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
                received.append({"json": json.loads(body),
                                 "signed": self.headers["X-Contimg-Signature"] == f"sha256={want}"})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def texts(self, since=0):
        return [r["json"]["text"] for r in self.received[since:]]


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()


def _contimg_run(workdir, repo_root, *extra):
    cmd = [sys.executable, "-m", "dsa110_contimg.cli", "run", "--config", str(repo_root / "config" / "config.yaml"),
           "--config", "site.yaml", "--snakefile", str(repo_root / "Snakefile"), *extra, "--", "--cores", "2"]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=900)


def _age(paths, seconds):
    stamp = time.time() - seconds
    for p in paths:
        os.utime(p, (stamp, stamp))


def _zero_data(paths):
    for p in paths:
        with h5py.File(p, "r+") as f:
            f["Data/visdata"][...] = 0


def _sidecar(path):
    return json.loads(open(naming.sidecar_path(path)).read())


def test_rolling_run_isolates_failures_alerts_once_and_takes_a_fixed_group_back(tmp_path, repo_root, receiver):
    simulate(tmp_path, replace(SMALL, start=transit_start(), n_obs=4, n_int=6, n_ants=16, n_chan=4,
                                       dec_deg=30.5, n_sources=4))
    raw = tmp_path / "raw"
    groups = group_files(raw_names(raw)).groups
    ids = [g.id for g in groups]
    corrupt, zero, good = groups[0], groups[1], ids[2:]
    bad_file = raw / corrupt.files[4]
    good_bytes = bad_file.read_bytes()
    bad_file.write_bytes(good_bytes[:2000])
    _zero_data([raw / name for name in zero.files.values()])
    _age(raw.iterdir(), 3600)
    # A group the correlator is still writing: 9 of 16 subbands, files "being written" (fresh mtime).
    writing = naming.format_timestamp(groups[-1].start.replace(tzinfo=None) + pd.Timedelta(minutes=10))
    for sb in range(9):
        path = raw / f"{writing}_sb{sb:02d}.hdf5"
        path.write_bytes(b"\0" * 100)
        os.utime(path, (time.time() + 3600, time.time() + 3600))  # stays fresh for the whole test
    (tmp_path / "site.yaml").write_text(json.dumps({
        "raw_dir": "raw", "results_dir": "results", "pointing": {"dec_deg": 30.5},
        # Tiny arrays make noisy images: grade none bad, so the light curves take them.
        "catalogue": {"path": "truth/sky.csv"},
        "imaging": {"imsize": 512, "grade": {"bad_rms_ratio": 1000, "marginal_rms_ratio": 999}},
        "run": {"settle_s": 5},
        "notify": {"webhook": {"url": receiver.url, "secret": SECRET}, "source": "test"},
    }))

    # 1st run: the corrupt and the zero group fail; everything else reaches the light curves.
    out = _contimg_run(tmp_path, repo_root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pass 2" in out.stdout, "a job failed, so a second pass ran the fan-ins without it"
    results = tmp_path / "results"
    lightcurves = str(results / "lightcurves" / "all.parquet")
    side = _sidecar(lightcurves)
    assert sorted(side["inputs"]) == [str(naming.product_path("results", "photometry", g)) for g in good]
    left_out = {e["group"]: e["reason"] for e in side["left_out"]}
    assert sorted(left_out) == [corrupt.id, zero.id]
    assert "convert failed" in left_out[corrupt.id] and bad_file.name in left_out[corrupt.id]
    assert writing not in left_out
    # The calibrator transits the third group: its light curve holds its flux (truth 14.65 Jy).
    measured = pd.read_parquet(lightcurves)
    cal = measured[(measured["source"] == "3C286") & (measured["group"] == ids[2])]
    assert len(cal) == 1 and cal["raw_flux_jy"].iloc[0] == pytest.approx(14.65, rel=0.03)
    status = json.loads((results / "run" / "status.json").read_text())
    failures = {f["group"]: f for n in status["nights"] for f in n["failures"]}
    assert sorted(failures) == [corrupt.id, zero.id]
    assert all(n["totals"]["incomplete"] == 0 for n in status["nights"]), "the group being written is not counted"
    texts = receiver.texts()
    assert all(r["signed"] for r in receiver.received)
    for bad in (corrupt.id, zero.id):
        assert sum(bad in t for t in texts) == 1, texts
    assert not any(writing in t for t in texts)
    assert receiver.url not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr
    metrics = (results / "run" / "contimg.prom").read_text()
    assert "contimg_run_last_run_exit_code 0.0" in metrics and 'contimg_rule_jobs{rule="convert"' in metrics

    # 2nd run, nothing changed: no job, no repeated message. A run while one holds the lock exits at once.
    n_sent = len(receiver.received)
    out = _contimg_run(tmp_path, repo_root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "pass 2" not in out.stdout and len(receiver.received) == n_sent
    with run_lock(results / "run" / "contimg-run.lock"):
        t0 = time.monotonic()
        busy = _contimg_run(tmp_path, repo_root)
        assert busy.returncode == 3 and "another contimg run is running" in busy.stderr
        assert time.monotonic() - t0 < 30

    # The corrupt file is replaced: the next run converts it and the light curves include it.
    bad_file.write_bytes(good_bytes)
    time.sleep(6)  # run.settle_s
    out = _contimg_run(tmp_path, repo_root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    side = _sidecar(lightcurves)
    assert str(naming.product_path("results", "photometry", corrupt.id)) in side["inputs"]
    assert [e["group"] for e in side["left_out"]] == [zero.id]
    texts = receiver.texts(n_sent)
    assert len(texts) == 1 and "RESOLVED" in texts[0] and corrupt.id in texts[0], texts
    print("\n".join(receiver.texts()))
