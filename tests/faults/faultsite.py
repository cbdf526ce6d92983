"""The fault suite's workflow folder and the commands an operator would type.

One tiny simulated observation holding a 3C286 transit (16 antennas, 4
channels, 6 integrations) runs through convert, calibration and a 128-pixel
image once per session (~1 min). Each case injects its fault into that run,
asserts what ``contimg status``, the database and the files say, clears the
fault, reruns, and leaves it healthy again (:meth:`Site.assert_healthy`) for
the next case. Each case appends its row (fault, what status says, what is
lost, time to recover) to ``test-artifacts/fault_table.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import naming
from dsa110_contimg.config import load_config
from dsa110_contimg.db import Database
from dsa110_contimg.raw.grouping import group_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TABLE = Path(os.environ.get("CONTIMG_TEST_ARTIFACTS", REPO / "test-artifacts")) / "fault_table.md"


@dataclass
class Site:
    """A workflow folder with its config, and the commands an operator would type."""

    workdir: Path
    config: Path
    group: str

    @property
    def results(self) -> Path:
        return Path(yaml.safe_load(self.config.read_text())["results_dir"])

    @property
    def image(self) -> Path:
        return Path(naming.product_path(self.results, "image", self.group))

    def snakemake_cmd(self, *extra: str, workdir: Path | None = None, config: Path | None = None) -> list[str]:
        return [
            str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir or self.workdir), *extra,
            "--cores", "2", "--configfile", str(REPO / "config" / "config.yaml"), str(config or self.config),
        ]  # fmt: skip

    def snakemake(self, *extra: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.snakemake_cmd(*extra, **kwargs), capture_output=True, text=True, timeout=900)

    def start(self, *extra: str, name: str = "bg", **kwargs) -> subprocess.Popen:
        """Snakemake in the background, in a session of its own, output to ``<name>.log``."""
        out = open(self.workdir / f"{name}.log", "w")
        proc = subprocess.Popen(self.snakemake_cmd(*extra, **kwargs), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        out.close()
        return proc

    def contimg(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(BIN / "contimg"), *args, "--config", str(self.config)]
        return subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, timeout=300)

    def status(self) -> subprocess.CompletedProcess:
        return self.contimg("status")

    def status_json(self) -> dict:
        return json.loads(self.contimg("status", "--json").stdout)

    def database(self) -> Database:
        return Database.from_config(load_config(self.config))

    def wait_for_image_job(self, proc: subprocess.Popen, timeout: float = 300) -> int:
        """The process id of the image job once it is imaging (its work folder exists)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for work in self.image.parent.glob(".*.image-work-*"):
                return int(work.name.rsplit("-", 1)[1])
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"the image job never started:\n{self.log_tail(proc)}")

    def log_tail(self, proc: subprocess.Popen | None = None, name: str = "bg") -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text()[-3000:] if path.exists() else ""

    def leftovers(self) -> list[str]:
        """Hidden files and folders under results/ other than the run lock."""
        return sorted(
            str(p.relative_to(self.results)) for p in self.results.rglob(".*")
            if p.name != ".contimg-run.lock" and ".ms/" not in str(p) and "caltables/" not in str(p)
        )  # fmt: skip

    def assert_healthy(self) -> None:
        """Everything made, recorded as made, nothing left over; sync changes nothing; status says healthy."""
        sync = self.contimg("db", "sync")
        assert sync.returncode == 0 and "(no change)" in sync.stdout, sync.stdout + sync.stderr
        status = self.status()
        assert status.returncode == 0 and "ALERTS: none" in status.stdout, status.stdout + status.stderr
        assert self.leftovers() == []
        with self.database() as db:
            (image,) = [r for r in db.list_products("image") if r["group_id"] == self.group]
        assert image["status"] == "current" and Path(image["path"]) == self.image.resolve()
        dry = self.snakemake("-n")
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stderr[-2000:]


def record(fault: str, status_says: str, lost: str, recover_s: float) -> None:
    """One row of the fault table (test-artifacts/fault_table.md)."""
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    if not TABLE.exists():
        TABLE.write_text("| fault | what status says | what is lost | time to recover (s) |\n|---|---|---|---|\n")
    with TABLE.open("a") as f:
        f.write(f"| {fault} | {status_says} | {lost} | {recover_s:.0f} |\n")


def make_site(workdir: Path) -> Site:
    opts = replace(SMALL, start=transit_start(before_s=35), n_obs=1, n_int=6, n_ants=16, n_chan=4,
                   dec_deg=30.5, n_sources=4)  # fmt: skip
    files = simulate(workdir, opts)
    (group,) = group_files([f.name for f in files]).groups
    config = workdir / "run.yaml"
    config.write_text(yaml.safe_dump({
        "raw_dir": str(workdir / "raw"), "results_dir": str(workdir / "results"),
        "pointing": {"dec_deg": 30.5}, "imaging": {"imsize": 128}, "mosaic": {"enabled": False},
        # A 15 Jy calibrator in a 128-pixel image of 16 antennas is far above thermal: not a fault here.
        "status": {"max_rms_over_thermal": 1000.0},
    }))  # fmt: skip
    site = Site(workdir, config, group.id)
    out = site.snakemake()
    assert out.returncode == 0, out.stderr[-3000:]
    site.assert_healthy()
    return site
