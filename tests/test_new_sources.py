"""New-source candidates on simulated images: no spurious ones around bright sources or at
edges, the injected new source found, recurrence over epochs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dsa110_contimg import naming
from dsa110_contimg.config import validate_config
from dsa110_contimg.photometry import catalogue as cat
from dsa110_contimg.photometry import forced as ph
from dsa110_contimg.photometry.new_sources import associate, envelope_at, psf_envelope
from dsa110_contimg.sim import variability as sv

RA0, DEC0 = 150.0, 33.0
SHAPE, CELL, BEAM = (600, 600), 6.0, (30.0, 25.0, 30.0)  # a 1 deg image, 5 pixels per beam
NOISE = 1e-3


def at(dx_arcmin, dy_arcmin):
    """(ra, dec) at an offset (east, north) from the image centre."""
    return RA0 + dx_arcmin / 60 / np.cos(np.radians(DEC0)), DEC0 + dy_arcmin / 60


def src(name, dx, dy, flux):
    ra, dec = at(dx, dy)
    return {"name": name, "ra_deg": ra, "dec_deg": dec, "flux_jy": flux}


# The catalogue: a 15 Jy calibrator-like source, field sources, and a 5 Jy source just off the east edge.
CATALOGUE = pd.DataFrame([
    src("BRIGHT", -12, 4, 15.0), src("F1", 10, -12, 0.3), src("F2", -20, -18, 0.2), src("F3", 18, 20, 0.5),
    src("F4", 5, 10, 0.05), src("OFF_EDGE", 31, -5, 5.0),
])
# What calibration and deconvolution errors leave (none of it in the catalogue): compact artefacts at
# 0.4-0.9% of BRIGHT within 10' of it (as in the demo), at ~0.8% of the off-edge source near the edge,
# and a 12 mJy blob 2 beams from the west edge with no bright source near it.
ARTEFACTS = pd.DataFrame([
    src("SL1", -12 + 4, 4 + 1, 0.009 * 15), src("SL2", -12 - 3, 4 - 5, 0.006 * 15), src("SL3", -12 + 7, 4 - 6, 0.004 * 15),
    src("SL4", -12 - 8, 4 + 4, 0.005 * 15), src("SL5", -12 + 1, 4 + 9, 0.007 * 15),
    src("EDGE1", 27.5, -3, 0.008 * 5 / 0.7), src("EDGE2", -29, 12, 0.012),
])
NEW = pd.DataFrame([src("NEW", 12, 8, 0.03)])


def image(sky: pd.DataFrame, seed: int) -> ph.ImageSet:
    img = sv.synthetic_image(sky, shape=SHAPE, cell_arcsec=CELL, beam_arcsec=BEAM, ra0=RA0, dec0=DEC0,
                             noise_jy=NOISE, seed=seed)
    return ph.ImageSet(img.pbcor, img.wcs, img.header, ph.Beam.from_header(img.header), img.pb, img.residual)


def options(**changes) -> ph.PhotometryOptions:
    """Synthetic images have no PSF envelope: the flat near term (1% within 10') vets them."""
    changes = {"sidelobe_fraction": 0.01, **changes}
    return ph.PhotometryOptions.from_config(validate_config({"photometry": changes}))


def test_artefacts_are_candidates_without_vetting():
    """The simulated artefacts are real islands above 7 sigma: only the vetting removes them."""
    new, _ = ph.find_new_sources(image(pd.concat([CATALOGUE, ARTEFACTS]), 1), CATALOGUE, 60841.0,
                                 options(sidelobe_fraction=0, edge_margin_beams=0))
    assert len(new) >= len(ARTEFACTS) - 1


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_spurious_candidates_on_a_field_with_no_new_source(seed):
    new, n_islands = ph.find_new_sources(image(pd.concat([CATALOGUE, ARTEFACTS]), seed), CATALOGUE, 60841.0,
                                         options())
    assert n_islands >= 8
    assert len(new) == 0, new
    rejected = new.attrs["rejected"]
    assert rejected["sidelobe"] >= 6 and rejected["edge"] >= 1


def test_the_injected_new_source_is_found():
    new, _ = ph.find_new_sources(image(pd.concat([CATALOGUE, ARTEFACTS, NEW]), 4), CATALOGUE, 60841.0, options())
    assert len(new) == 1
    row = new.iloc[0]
    assert cat.separation_deg(row.ra_deg, row.dec_deg, NEW.ra_deg[0], NEW.dec_deg[0])[()] * 3600 < 5
    assert row.flux_jy == pytest.approx(0.03, abs=4 * row.flux_err_jy)
    assert row.significance > 7 and row.edge_distance_beams > 5


def test_recurrence_over_epochs_flags_a_single_epoch_candidate():
    transient = pd.DataFrame([src("FLASH", -18, -6, 0.04)])
    tables = []
    for k in range(3):
        sky = pd.concat([CATALOGUE, ARTEFACTS, NEW] + ([transient] if k == 1 else []))
        new, _ = ph.find_new_sources(image(sky, 10 + k), CATALOGUE, 60841.0 + k, options())
        tables.append(new)
    assert [len(t) for t in tables] == [1, 2, 1]
    groups = associate(tables, radius_arcsec=BEAM[0])
    assert len(groups) == 2
    steady = groups[~groups.single_epoch].iloc[0]
    assert steady.n_epochs == 3 and steady.first_mjd == 60841.0 and steady.last_mjd == 60843.0
    assert cat.separation_deg(steady.ra_deg, steady.dec_deg, NEW.ra_deg[0], NEW.dec_deg[0])[()] * 3600 < 5
    flash = groups[groups.single_epoch].iloc[0]
    assert flash.n_epochs == 1 and flash.first_mjd == 60842.0
    assert associate([t.iloc[:0] for t in tables], 30.0).empty


def test_fan_in_writes_the_candidates_of_all_epochs_by_position(tmp_path):
    from dsa110_contimg.stages import photometry as stage
    paths = []
    for k, extra in enumerate([[NEW], [NEW, pd.DataFrame([src("FLASH", -18, -6, 0.04)])], [NEW]]):
        new, _ = ph.find_new_sources(image(pd.concat([CATALOGUE, ARTEFACTS, *extra]), 20 + k), CATALOGUE,
                                     60841.0 + k, options())
        paths.append(tmp_path / f"epoch{k}.new_sources.csv")
        new.to_csv(paths[-1], index=False)
    (tmp_path / "broken.new_sources.csv").write_text("not,a\ncandidate")  # lacks the columns: left out
    outs = {k: v for k, v in naming.rule_outputs(tmp_path / "results", "lightcurves", name="all").items() if not k.endswith("_sidecar")}
    config = validate_config({"results_dir": str(tmp_path / "results")})
    qa = stage.lightcurves([], outs, config, log=str(tmp_path / "lc.log"), register=False,
                           new_source_files=[str(p) for p in paths] + [str(tmp_path / "broken.new_sources.csv")])
    summary = pd.read_csv(outs["new_source_summary"])
    assert qa["n_new_source_candidates"] == 2 and qa["n_new_source_single_epoch"] == 1
    assert sorted(summary.n_epochs) == [1, 3] and summary.single_epoch.sum() == 1


def _ring_psf(n=901, cell=6.0):
    """A PSF of a 30" main lobe and two sidelobe rings: 0.2 at 20' and 0.01 at 40'."""
    yy, xx = np.indices((n, n)) - n // 2
    r = np.hypot(xx, yy) * cell / 60  # arcmin
    return (np.exp(-0.5 * (r * 60 / 12.7) ** 2) + 0.2 * np.exp(-0.5 * ((r - 20) / 0.3) ** 2)
            + 0.01 * np.exp(-0.5 * ((r - 40) / 0.3) ** 2))


def test_psf_envelope_follows_the_sidelobe_rings():
    env = psf_envelope(_ring_psf(), 6.0, inner_arcsec=60.0)
    at = envelope_at(env, np.array([10, 20, 30, 40]) / 60)
    assert at[1] == pytest.approx(0.2, rel=0.15) and at[3] == pytest.approx(0.01, rel=0.3)
    assert at[0] < 0.01 and at[2] < 0.01
    assert envelope_at(env, np.array([5.0]))[0] == pytest.approx(env["level"][-1])  # beyond: the last level
    assert (envelope_at(None, np.array([0.1, 1.0])) == 1).all()


def test_an_artefact_on_a_far_sidelobe_of_a_bright_source_is_rejected_and_a_source_off_it_kept():
    """22 mJy (0.15% of BRIGHT) 20' from it, on the PSF's 0.2 ring: beyond the near radius, rejected only
    through the envelope; the same flux 30' from it, between the rings, is a candidate."""
    ring = src("RING", -12 + 20, 4, 0.022)
    off = src("OFF", -12, 4 - 30, 0.022)
    sky = pd.concat([CATALOGUE, pd.DataFrame([ring, off])])
    env = psf_envelope(_ring_psf(), 6.0, inner_arcsec=60.0)
    new, _ = ph.find_new_sources(image(sky, 5), CATALOGUE, 60841.0, options(), envelope=env)
    found = {(round(r.ra_deg, 2), round(r.dec_deg, 2)) for r in new.itertuples()}
    assert (round(off["ra_deg"], 2), round(off["dec_deg"], 2)) in found
    assert (round(ring["ra_deg"], 2), round(ring["dec_deg"], 2)) not in found
    without, _ = ph.find_new_sources(image(sky, 5), CATALOGUE, 60841.0, options())
    assert len(without) == 2  # no envelope: only the near term, which does not reach 20'
