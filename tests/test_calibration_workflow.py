"""Rules solve_calibration and apply_calibration on a realistic sky: the sky model, the flux
standard's record and self-calibration end up in the sidecars."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

from simdata import SMALL, simulate, transit_start

from dsa110_contimg import naming
from dsa110_contimg.raw.grouping import group_files


def test_transit_and_target_through_the_rules_with_sky_model_and_selfcal(tmp_path, snakemake_exe, repo_root):
    start = transit_start("3C286", 12 * 12.884901888 / 2)
    files = simulate(tmp_path, replace(SMALL, start=start, n_obs=3, n_int=12, n_ants=16, n_chan=4, dec_deg=30.5,
                                       n_sources=10, flux_min_jy=0.5, flux_max_jy=3.0))
    groups = [g.id for g in group_files([f.name for f in files]).groups]
    (tmp_path / "cfg.yaml").write_text(
        "pointing:\n  dec_deg: 30.5\ncatalogue:\n  path: truth/sky.csv\n"
        "calibration:\n  selfcal: {mode: p, solint: inf}\n"
    )
    target = naming.product_path("results", "calibrated", groups[-1])
    out = subprocess.run(
        [str(snakemake_exe), "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path), "--configfile",
         str(repo_root / "config" / "config.yaml"), str(tmp_path / "cfg.yaml"), "--cores", "2", str(target)],
        capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (caltable,) = sorted((tmp_path / "results" / "caltables").glob("*[0-9]"))
    cal_qa = json.loads((caltable.parent / (caltable.name + ".json")).read_text())["qa"]
    assert cal_qa["passed"] and cal_qa["calibrator"] == "3C286" and cal_qa["flux_standard"]
    assert cal_qa["skymodel"]["n_components"] >= 13  # 3C286 and its 12 field sources at least
    qa = json.loads((tmp_path / (str(target) + ".json")).read_text())["qa"]
    assert qa["flux_bootstrap"]["source"] == "Perley-Butler 2017"
    sc = qa["selfcal"]
    assert sc["status"] == "ok" and sc["n_components"] >= 1 and sc["rounds"]
    # RFI flagged on the residual of selfcal's own field model: this RFI-free field keeps its data
    assert qa["rfi_flagged_on"] == "residual" and qa["rfi_model_components"] == sc["n_components"]
    assert qa["rfi_flagged_fraction"] <= 0.02
    assert {"rms_before", "rms_after", "accepted", "reason"} <= set(sc["rounds"][0])
    assert sc["rms_end"] <= sc["rms_start"]
    # 3C286, ~1.1 deg from the target's pointing, subtracted through the beam and put back (in the field).
    sub = qa["subtract"]
    assert sub["status"] == "ok", sub
    (c286,) = [s for s in sub["sources"] if s["name"] == "3C286"]
    assert c286["restored"] and abs(c286["flux_factor"] - 1) < 0.05, c286
