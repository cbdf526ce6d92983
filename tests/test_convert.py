"""UVH5 -> MS conversion against its input and against CASA's own geometry."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from casacore import tables
from simdata import SMALL, point_sky, run_casa, simulate

from dsa110_contimg import naming, telescope
from dsa110_contimg.raw.convert import ConversionError, convert_group
from dsa110_contimg.stages.convert import convert as convert_stage


@pytest.fixture(scope="module")
def one_source(tmp_path_factory):
    """A noise-free observation of one source 1.2 deg from the phase centre, unit gains."""
    tmp = tmp_path_factory.mktemp("one_source")
    sky = point_sky(SMALL, offsets_deg=[(0.9, 0.8)], flux_jy=3.0)
    files = simulate(tmp, sky=sky, noise=False, gains=False, calibrators=False)
    ms = tmp / "obs.ms"
    qa = convert_group(files, ms)
    return tmp, files, ms, qa


def test_ms_matches_its_input(one_source):
    tmp, files, ms, qa = one_source
    with tables.table(str(ms / "SPECTRAL_WINDOW"), ack=False) as t:
        freq = t.getcol("CHAN_FREQ")[0]
    expected = np.sort(np.concatenate([telescope.subband_frequencies(k, SMALL.n_chan) for k in range(16)]))
    assert np.array_equal(freq, expected), "one spectral window, ascending"
    assert qa["n_channels"] == 16 * SMALL.n_chan and qa["n_subbands"] == 16

    with tables.table(str(ms), ack=False) as t:
        data, flag = t.getcol("DATA"), t.getcol("FLAG")
        a1, a2, times = t.getcol("ANTENNA1"), t.getcol("ANTENNA2"), t.getcol("TIME")
        assert t.getcol("FIELD_ID").max() == 0
    assert np.all(a1 <= a2)
    assert np.all(flag[a1 == a2]) and not np.any(flag[a1 != a2]), "autos kept and flagged"

    # At the middle integration the new phase centre is the correlator's own, so
    # the MS holds the file's visibilities, channel-reversed and in CASA's
    # conjugation (conjugated unless the antennas were swapped to make a1 < a2).
    with h5py.File(files[0], "r") as h:
        n_bls = h["Header/Nbls"][()]
        f1, f2 = h["Header/ant_1_array"][()][:n_bls], h["Header/ant_2_array"][()][:n_bls]
    mid = slice(n_bls * (SMALL.n_int // 2), n_bls * (SMALL.n_int // 2 + 1))
    raw = np.concatenate(
        [h5py.File(f, "r")["Data/visdata"][mid, 0][:, ::-1, :] for f in files[::-1]], axis=1
    )
    raw = np.where((f1 > f2)[:, None, None], raw, np.conj(raw))
    assert np.allclose(data[mid], raw, rtol=1e-3, atol=1e-3 * np.abs(raw).max())
    assert np.array_equal(a1[mid], np.minimum(f1, f2))
    assert np.unique(times).size == SMALL.n_int


def test_casa_opens_it_and_agrees_with_its_geometry_and_sky_model(one_source, tmp_path):
    """CASA recomputes the uvw and predicts the source: both must match the MS."""
    tmp, _, ms, _ = one_source
    sky = (tmp / "truth" / "sky.csv").read_text().splitlines()[1].split(",")
    ra, dec, flux, alpha = map(float, sky[1:5])
    work = tmp_path / "casa"
    work.mkdir()
    shutil.copytree(ms, work / "obs.ms")
    result = run_casa(
        f"""
        cta.listobs(vis="obs.ms", listfile="listobs.txt", overwrite=True)
        listing = open("listobs.txt").read()
        cta.fixvis(vis="obs.ms", outputvis="fixed.ms", reuse=False)
        tb = ct.table()
        tb.open("obs.ms"); uvw = tb.getcol("UVW"); data = tb.getcol("DATA")
        a1 = tb.getcol("ANTENNA1"); a2 = tb.getcol("ANTENNA2"); tb.close()
        tb.open("fixed.ms"); uvw_casa = tb.getcol("UVW"); tb.close()
        tb.open("obs.ms/SPECTRAL_WINDOW"); freq = tb.getcol("CHAN_FREQ")[:, 0]; tb.close()
        cl = ct.componentlist()
        cl.addcomponent(dir="J2000 {ra}deg {dec}deg", flux={flux}, fluxunit="Jy", freq="1.4GHz",
                        shape="point", spectrumtype="spectral index", index={alpha})
        cl.rename("sky.cl"); cl.close()
        cta.ft(vis="obs.ms", complist="sky.cl", usescratch=True)
        tb.open("obs.ms"); model = tb.getcol("MODEL_DATA"); tb.close()
        cross = a1 != a2
        ratio = data[:, :, cross] * np.conj(model[:, :, cross])
        phase = np.angle(ratio[0])  # (chan, row)
        k = 2 * np.pi * freq[:, None] / 299792458.0
        A = np.vstack([np.column_stack([kc * uvw[0, cross], kc * uvw[1, cross]]) for kc in k[:, 0]])
        sol, *_ = np.linalg.lstsq(A, phase.ravel(), rcond=None)
        resid = phase.ravel() - A @ sol
        result = dict(
            listobs_ok="Fields: 1" in listing and "Antennas: {SMALL.n_ants}" in listing,
            uvw_diff_m=float(np.abs(uvw_casa - uvw).max()),
            offset_arcsec=[float(x) for x in np.degrees(sol) * 3600],
            resid_deg=float(np.degrees(resid.std())),
            phase_conj_deg=float(np.degrees(np.median(np.abs(np.angle(data[:, :, cross] * model[:, :, cross]))))),
        )
        """,
        work,
    )
    assert result["listobs_ok"]
    # CASA's uvw (its own UT1 and frame handling) agree to a few cm over 3.5 km.
    assert result["uvw_diff_m"] < 0.05
    # DATA and CASA's prediction differ only by a sub-arcsecond astrometric offset
    # (different earth-orientation handling), far below the ~15" beam.
    assert np.hypot(*result["offset_arcsec"]) < 0.5
    assert result["resid_deg"] < 0.05
    assert result["phase_conj_deg"] > 30, "the opposite conjugation must be clearly wrong"


def _group_of(files):
    return naming.format_timestamp(min(naming.parse_raw_filename(f.name)[0] for f in files))


@pytest.fixture()
def small(tmp_path):
    files = simulate(tmp_path, calibrators=False)
    return tmp_path, files


def test_truncated_subband_is_named(small):
    tmp, files = small
    bad = files[5]
    size = bad.stat().st_size
    with open(bad, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ConversionError, match=bad.name):
        convert_group(files, tmp / "x.ms")


def test_subband_with_wrong_frequencies_is_named(small):
    tmp, files = small
    # A file whose name says sb04 but which holds sb03's channels.
    wrong = files[4].with_name(files[4].name)
    shutil.copy(files[3], wrong)
    with pytest.raises(ConversionError, match=f"{wrong.name}.*not the descending channels of subband 4"):
        convert_group(files, tmp / "x.ms")


def test_subband_with_wrong_shape_is_named(small, tmp_path_factory):
    tmp, files = small
    other = simulate(tmp_path_factory.mktemp("other"), n_chan=16, calibrators=False)
    shutil.copy(other[7], files[7])
    with pytest.raises(ConversionError, match=f"{files[7].name}.*channels"):
        convert_group(files, tmp / "x.ms")


def test_corrupt_data_shape_is_named(small):
    tmp, files = small
    with h5py.File(files[2], "r+") as h:
        del h["Data/nsamples"]
        h["Data"].create_dataset("nsamples", data=np.ones((3, 1, 2, 2), np.float32))
    with pytest.raises(ConversionError, match=f"{files[2].name}: Data/nsamples has shape"):
        convert_group(files, tmp / "x.ms")


def test_failed_conversion_keeps_the_previous_product_and_registers_nothing(small):
    """A rerun that fails leaves the earlier MS, its sidecar and the database untouched."""
    from dsa110_contimg.config import validate_config
    from dsa110_contimg.db import Database

    tmp, files = small
    config = validate_config({"raw_dir": str(tmp / "raw"), "results_dir": str(tmp / "results")})
    ms = naming.ms_path(config["results_dir"], _group_of(files))
    convert_stage([str(f) for f in files], ms, _group_of(files), config)
    before = sorted(p.name for p in (tmp / "results" / "ms").iterdir())
    with tables.table(ms, ack=False) as t:
        n_rows = t.nrows()
    with open(files[9], "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ConversionError, match=files[9].name):
        convert_stage([str(f) for f in files], ms, _group_of(files), config)
    assert sorted(p.name for p in (tmp / "results" / "ms").iterdir()) == before, "no temporary left"
    with tables.table(ms, ack=False) as t:
        assert t.nrows() == n_rows
    with Database.from_config(config) as db:
        rows = db.list_products(kind="ms")
        runs = db.job_runs()
    assert len(rows) == 1 and rows[0]["status"] == "current"
    failed = [r for r in runs if r["status"] == "failed"]
    assert len(failed) == 1 and files[9].name in failed[0]["message"], "the failure and its reason are recorded"
