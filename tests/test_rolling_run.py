"""The rolling run end to end: `contimg run` called repeatedly on a raw folder that
holds a corrupt group, a group whose data are all zero (its processing fails), a
group still being written and good groups, with a real local webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import pandas as pd
import pytest
from astropy.io import fits
from promstack import promstack
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import naming
from dsa110_contimg.monitoring.disk import kept_by_product
from dsa110_contimg.raw.grouping import group_files, raw_names
from dsa110_contimg.rolling.lock import run_lock

SECRET = "s3cret-hook"
REPO = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="module")
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


def _ok(out):
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def rolled(tmp_path_factory, repo_root, receiver):
    """The scenario, run once: four simulated groups (the first corrupt, the second all
    zeros), a group being written; `contimg run` three times (the corrupt file replaced
    before the third) and once while the lock is held. What each step showed is kept."""
    tmp_path = tmp_path_factory.mktemp("rolling")
    simulate(tmp_path, replace(SMALL, start=transit_start(), n_obs=4, n_int=6, n_ants=16, n_chan=4,
                               dec_deg=30.5, n_sources=4))
    raw = tmp_path / "raw"
    groups = group_files(raw_names(raw)).groups
    corrupt, zero = groups[0], groups[1]
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
        "run": {"settle_s": 5, "min_free_gb": 0.001}, "retention": {"intermediates": "temp", "compress_images": True, "psf_pixels": 128},
        "notify": {"webhook": {"url": receiver.url, "secret": SECRET}, "source": "test"},
    }))
    results = tmp_path / "results"
    lightcurves = str(results / "lightcurves" / "all.parquet")
    seen = {"dir": tmp_path, "ids": [g.id for g in groups], "corrupt": corrupt.id, "zero": zero.id,
            "writing": writing, "bad_file": bad_file.name, "lightcurves": lightcurves}
    seen["run1"] = _ok(_contimg_run(tmp_path, repo_root))
    seen["sidecar1"] = _sidecar(lightcurves)
    seen["lightcurves1"] = pd.read_parquet(lightcurves)
    seen["status1"] = json.loads((results / "run" / "status.json").read_text())
    seen["metrics1"] = (results / "run" / "contimg.prom").read_text()
    seen["texts1"] = receiver.texts()
    seen["outcomes1"] = [json.loads(p.read_text()) for p in sorted((results / "mosaics").glob("*/*.outcome.json"))]
    seen["run2"] = _ok(_contimg_run(tmp_path, repo_root))
    seen["texts2"] = receiver.texts(len(seen["texts1"]))
    with run_lock(results / "run" / "contimg-run.lock"):
        t0 = time.monotonic()
        seen["busy"] = _contimg_run(tmp_path, repo_root)
        seen["busy_s"] = time.monotonic() - t0
    # The corrupt file is replaced: the next run converts it and the light curves include it.
    bad_file.write_bytes(good_bytes)
    time.sleep(6)  # run.settle_s
    n_before = len(receiver.received)
    seen["run3"] = _ok(_contimg_run(tmp_path, repo_root))
    seen["sidecar3"] = _sidecar(lightcurves)
    seen["texts3"] = receiver.texts(n_before)
    seen["signed"] = [r["signed"] for r in receiver.received]
    seen["kept"] = kept_by_product(results, raw)
    print("\n".join(receiver.texts()))
    return seen


def test_one_bad_observation_withholds_nothing(rolled):
    assert "pass 2" in rolled["run1"].stdout, "a job failed, so a second pass ran the fan-ins without it"
    good = rolled["ids"][2:]
    side = rolled["sidecar1"]
    assert sorted(side["inputs"]) == [str(naming.product_path("results", "photometry", g)) for g in good]
    left_out = {e["group"]: e["reason"] for e in side["left_out"]}
    assert sorted(left_out) == [rolled["corrupt"], rolled["zero"]]
    assert "convert failed" in left_out[rolled["corrupt"]] and rolled["bad_file"] in left_out[rolled["corrupt"]]
    assert "apply_calibration failed" in left_out[rolled["zero"]]
    assert rolled["writing"] not in left_out
    # The calibrator transits the third group: its light curve holds its flux (truth 14.65 Jy).
    measured = rolled["lightcurves1"]
    cal = measured[(measured["source"] == "3C286") & (measured["group"] == rolled["ids"][2])]
    assert len(cal) == 1 and cal["raw_flux_jy"].iloc[0] == pytest.approx(14.65, rel=0.03)
    # Every mosaic of the default targets has its outcome: built from the good images, naming the rest.
    outcomes = rolled["outcomes1"]
    assert sorted((o["tier"], o["name"]) for o in outcomes) == [("quicklook", "latest"), ("science", "2025-06-16")]
    for o in outcomes:
        assert o["built"] == (o["n_images"] > 0) and o["n_images"] <= 2
        held = {e["group"]: e["reason"] for e in o["left_out"] if not e["image"]}
        assert set(held) == {rolled["corrupt"], rolled["zero"]} and "convert failed" in held[rolled["corrupt"]]


def test_status_names_the_bad_groups_not_the_one_being_written(rolled):
    status = rolled["status1"]
    failures = {f["group"]: f for n in status["nights"] for f in n["failures"]}
    assert sorted(failures) == [rolled["corrupt"], rolled["zero"]]
    assert all(n["totals"]["incomplete"] == 0 for n in status["nights"]), "the group being written is not counted"
    assert rolled["writing"] not in json.dumps(status)


def test_each_bad_group_is_in_exactly_one_signed_webhook_message(rolled, receiver):
    texts = rolled["texts1"]
    assert all(rolled["signed"])
    for bad in (rolled["corrupt"], rolled["zero"]):
        assert sum(bad in t for t in texts) == 1, texts
    assert not any(rolled["writing"] in t for t in texts)
    assert rolled["texts2"] == [], "nothing changed: nothing sent"
    for out in (rolled["run1"], rolled["run2"], rolled["run3"]):
        assert receiver.url not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr


def test_intermediates_are_removed_once_used_and_not_remade(rolled):
    results = rolled["dir"] / "results"
    imaged = [g for g in rolled["ids"] if g != rolled["zero"]]
    for g in imaged:
        assert (results / naming.product_path("", "image", g)).exists()
        assert not (results / naming.ms_path("", g)).exists(), "retention.intermediates: temp"
        assert not (results / naming.product_path("", "calibrated", g)).exists()
        assert (results / naming.sidecar_path(naming.ms_path("", g))).exists(), "the record stays"
    # The zero group failed at apply_calibration: its MS stays for whoever looks into it.
    assert (results / naming.ms_path("", rolled["zero"])).exists()
    assert "Nothing to be done" in rolled["run2"].stdout + rolled["run2"].stderr, "nothing is remade"
    kept = rolled["kept"]
    print(json.dumps(kept, indent=1))
    assert "calibrated" not in kept["bytes"] and kept["n_observations"] == len(imaged)
    # The images are kept tile-compressed (the light curves above were measured on them), the PSF cropped.
    image = results / naming.product_path("", "image", imaged[-1])
    with fits.open(image) as hdul:
        assert hdul[0].data is None and isinstance(hdul[1], fits.CompImageHDU)
    assert fits.getdata(results / naming.product_path("", "psf", imaged[-1])).shape[-2:] == (128, 128)
    assert image.stat().st_size < 512 * 512 * 4 / 3


def test_a_second_run_exits_at_once_while_one_holds_the_lock(rolled):
    busy = rolled["busy"]
    assert busy.returncode == 3 and "another contimg run is running (pid" in busy.stderr
    assert rolled["busy_s"] < 30


def test_a_replaced_file_brings_its_group_back(rolled):
    side = rolled["sidecar3"]
    assert str(naming.product_path("results", "photometry", rolled["corrupt"])) in side["inputs"]
    assert [e["group"] for e in side["left_out"]] == [rolled["zero"]]
    texts = rolled["texts3"]
    assert len(texts) == 1 and "RESOLVED" in texts[0] and rolled["corrupt"] in texts[0], texts


def test_every_dashboard_panel_and_alert_rule_finds_the_run_metrics_in_prometheus(rolled, tmp_path):
    metrics = rolled["metrics1"]
    assert "contimg_run_last_run_exit_code 0.0" in metrics and 'contimg_rule_jobs{rule="convert"' in metrics
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    (textfiles / "contimg.prom").write_text(metrics)
    dashboard = json.loads((REPO / "ops" / "grafana" / "contimg-dashboard.json").read_text())
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    rules = (REPO / "ops" / "prometheus" / "contimg-rules.yml").read_text()
    with promstack(textfiles, tmp_path) as prom:
        empty = [(title, e) for title, e in exprs if not prom.query(e)["data"]["result"]]
        names = prom.series_names()
    assert len(exprs) >= 15 and not empty, f"panels without data: {empty}"
    # The rules read metrics this run exports (the flux ratio needs two solutions at one declination).
    used = set(re.findall(r"contimg_[a-z_]+", rules))
    assert used - names <= {"contimg_calibrator_flux_ratio"}, used - names
