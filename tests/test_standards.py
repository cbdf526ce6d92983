"""The tabulated Perley-Butler 2017 spectra against CASA's own setjy, and the calibrator catalogue."""

from __future__ import annotations

import numpy as np
import pytest
from simdata import SMALL, run_casa, simulate

from dsa110_contimg.calibration import calibrators, standards
from dsa110_contimg.config import validate_config
from dsa110_contimg.raw.convert import convert_group


def test_tabulated_perley_butler_matches_casa_setjy(tmp_path):
    """For each standard, setjy(standard='Perley-Butler 2017') on a tiny 2025 MS (field renamed to
    the standard, so the model sits on the phase centre) gives per channel what we tabulate."""
    files = simulate(tmp_path, SMALL, n_sources=0, calibrators=False)
    ms = tmp_path / "tiny.ms"
    convert_group(files, ms)
    got = run_casa(
        f"""
        tb = ct.table(); result = {{}}
        tb.open("{ms}/SPECTRAL_WINDOW"); freq = tb.getcol("CHAN_FREQ")[:, 0]; tb.close()
        for name in {standards.standard_names()!r}:
            tb.open("{ms}/FIELD", nomodify=False); tb.putcol("NAME", np.array([name])); tb.close()
            cta.setjy(vis="{ms}", field="0", standard="Perley-Butler 2017", usescratch=True, scalebychan=True)
            tb.open("{ms}"); model = tb.getcol("MODEL_DATA", 0, 1)[0, :, 0]; tb.close()
            result[name] = model.real.tolist()
        result["freq"] = freq.tolist()
        """,
        tmp_path,
    )
    freq = np.array(got["freq"])
    assert freq.min() < 1.32e9 and freq.max() > 1.49e9
    for name in standards.standard_names():
        np.testing.assert_allclose(standards.flux_density(name, freq), got[name], rtol=2e-4, err_msg=name)
    assert standards.flux_density("3C286", 1.4e9) == pytest.approx(15.08, abs=0.01)  # DESIGN.md's figure
    assert standards.flux_density("J1331+305", 1.4e9) == standards.flux_density("3C286", 1.4e9)
    with pytest.raises(KeyError, match="3C84 is not a Perley-Butler 2017 flux standard"):
        standards.flux_density("3C84", 1.4e9)


def test_calibrators_are_chosen_from_the_vla_list_by_flux_and_c_d_quality():
    full = calibrators.vla_list()
    assert len(full) == 1033  # 1,034 rows, one without a 20 cm flux
    cfg = validate_config({})["calibration"]
    cal = calibrators.load_calibrators(cfg)
    assert set(standards.standard_names()) <= set(cal.name)
    assert cal.set_index("name").loc["3C286", "flux_jy"] == pytest.approx(15.08, abs=0.01)
    secondaries = cal[cal.flux_standard == ""]
    assert (secondaries.flux_jy >= cfg["calibrator_min_flux_jy"]).all()
    assert secondaries.quality_C.isin(["P", "S"]).all() and secondaries.quality_D.isin(["P", "S"]).all()
    # A bright source unusable in C configuration (3C196: C = X) is not a calibrator.
    assert "3C196" in set(full.name) and "3C196" not in set(cal.name)
    stricter = calibrators.load_calibrators(dict(cfg, calibrator_min_flux_jy=3.0, calibrator_quality_codes=["P"]))
    assert len(stricter) < len(cal) and set(standards.standard_names()) <= set(stricter.name)


def test_uncalibratable_declinations_are_only_a_few_narrow_gaps():
    gaps = calibrators.uncalibratable_declinations()
    # Everything north of dec 84 and three narrow gaps (report these in README).
    assert gaps[-1] == pytest.approx((84.0, 90.0), abs=0.05)
    assert sum(b - a for a, b in gaps[:-1]) < 3.0
    for dec in (20.0, 30.5, 60.0):
        assert not any(a <= dec <= b for a, b in gaps), dec
