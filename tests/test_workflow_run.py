"""The whole workflow on simulated data: products, sidecars, database, bad groups."""

from __future__ import annotations

import subprocess
from dataclasses import replace

from casacore import tables
from simdata import SMALL, simulate, transit_start

from dsa110_contimg import naming
from dsa110_contimg.config import validate_config
from dsa110_contimg.db import Database
from dsa110_contimg.raw.grouping import group_files


def _run(snakemake_exe, repo_root, workdir, *extra):
    cmd = [
        str(snakemake_exe), "-s", str(repo_root / "Snakefile"), "-d", str(workdir),
        "--configfile", str(repo_root / "config" / "config.yaml"),
        "--cores", "2", "--keep-going", *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


def test_workflow_converts_good_groups_and_names_the_bad_one(tmp_path, snakemake_exe, repo_root):
    # 6 integrations: observations 77 s apart, more than the 60 s grouping tolerance.
    files = simulate(tmp_path, replace(SMALL, n_obs=3, n_int=6, calibrators=False))
    found = group_files([f.name for f in files]).groups
    groups = [g.id for g in found]
    assert len(groups) == 3
    bad = tmp_path / "raw" / found[2].ordered_files()[4]
    bad.write_bytes(bad.read_bytes()[:2000])
    (tmp_path / "raw" / "notes.txt").write_text("not an observation")

    out = _run(snakemake_exe, repo_root, tmp_path)
    assert out.returncode != 0, "a failed group fails the run"
    log = (tmp_path / naming.log_path("results", "convert", groups[2])).read_text()
    assert bad.name in log and "truncated" in log
    assert "notes.txt" in out.stderr

    config = validate_config({"raw_dir": "raw", "results_dir": str(tmp_path / "results")})
    with Database.from_config(config) as db:
        rows = {r["group_id"]: r for r in db.list_products(kind="ms")}
    assert sorted(rows) == groups[:2]
    for g in groups[:2]:
        ms = tmp_path / naming.ms_path("results", g)
        with tables.table(str(ms), ack=False) as t:
            assert t.nrows() == rows[g]["n_rows"] > 0
        assert (tmp_path / naming.sidecar_path(naming.ms_path("results", g))).exists()
    assert not (tmp_path / naming.ms_path("results", groups[2])).exists()
    assert not list((tmp_path / "results" / "ms").glob(".*tmp*")), "no partial product left"

    # Deleting a product and rerunning makes exactly that product again, once.
    first = tmp_path / naming.ms_path("results", groups[0])
    mtime_other = (tmp_path / naming.ms_path("results", groups[1])).stat().st_mtime
    subprocess.run(["rm", "-r", str(first)], check=True)
    out = _run(snakemake_exe, repo_root, tmp_path, naming.ms_path("results", groups[0]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert first.exists()
    assert (tmp_path / naming.ms_path("results", groups[1])).stat().st_mtime == mtime_other
    with Database.from_config(config) as db:
        rows = [r for r in db.list_products(kind="ms") if r["group_id"] == groups[0]]
    assert len(rows) == 1 and rows[0]["status"] == "current"


def test_one_transit_is_solved_once_and_calibrates_every_observation(tmp_path, snakemake_exe, repo_root):
    import json

    start = transit_start()
    simulate(tmp_path, replace(SMALL, start=start, n_obs=3, n_int=6, n_ants=16, n_chan=4, dec_deg=30.5,
                               n_sources=4))
    (tmp_path / "dec.yaml").write_text("pointing:\n  dec_deg: 30.5\n")
    groups = [g.id for g in group_files([p.name for p in (tmp_path / "raw").iterdir()]).groups]
    # Calibration's products only: imaging and what follows run in the Slurm demo and rolling tests.
    targets = [naming.product_path("results", "calibrated", g) for g in groups] + [naming.calflux_path("results")]
    out = _run(snakemake_exe, repo_root, tmp_path, *targets, "--configfile", str(repo_root / "config" / "config.yaml"),
               str(tmp_path / "dec.yaml"))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    caltables = sorted((tmp_path / "results" / "caltables").glob("*[0-9]"))
    assert len(caltables) == 1, "one transit, one solution"
    calgroup = caltables[0].name
    calibrated = sorted((tmp_path / "results" / "calibrated").glob("*.ms"))
    assert len(calibrated) == 3
    for ms in calibrated:
        qa = json.loads((ms.parent / (ms.name + ".json")).read_text())["qa"]
        assert qa["caltable"] == calgroup and qa["flagged_fraction"] < 0.2
        # target data are RFI-flagged (AOFlagger by default); these simulated data have no RFI
        assert qa["rfi_method"] == "aoflagger" and 0 <= qa["rfi_flagged_fraction"] < 0.03
    flux = (tmp_path / naming.calflux_path("results")).read_text()
    assert "3C286" in flux
    config = validate_config({"results_dir": str(tmp_path / "results")})
    with Database.from_config(config) as db:
        kinds = [r["kind"] for r in db.list_products()]
    assert kinds.count("caltable") == 1 and kinds.count("calibrated") == 3
