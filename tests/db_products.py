"""Products as the stages write them (file + sidecar, per docs/products.md), for the database tests.

The products' contents are stand-ins (a database test needs names, sidecars
and, for photometry, real parquet rows), but every file is written the way
the stages write theirs: atomically, then its sidecar. Also the fixtures that
give each test an empty SQLite and an empty PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pg import shared_server

from dsa110_contimg import naming
from dsa110_contimg.provenance import atomic_output, write_sidecar

GROUP = "2025-06-15T08:00:03"
GROUP2 = "2025-06-15T08:05:12"
CALGROUP = "2025-06-15T07:55:00"
MJD_1970 = 40587.0


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def pg_server():
    """One throwaway PostgreSQL server for the whole session (started on first use)."""
    return shared_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    """An empty database of each back end."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/products.sqlite"
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def database(db_url):
    """An open :class:`~dsa110_contimg.db.Database` on each back end's empty database."""
    from dsa110_contimg.db import Database

    with Database(db_url) as database:
        yield database


@pytest.fixture
def dirs(tmp_path):
    """Empty ``raw`` and ``results`` folders."""
    raw, results = tmp_path / "raw", tmp_path / "results"
    raw.mkdir()
    results.mkdir()
    return raw, results


# ------------------------------------------------------------------ writers


def group_at(minutes: float, day: str = "2025-06-15") -> str:
    """A group id ``minutes`` after midnight UTC of ``day``."""
    start = dt.datetime.fromisoformat(day) + dt.timedelta(minutes=minutes)
    return naming.format_timestamp(start)


def mjd(group: str) -> float:
    return dt.datetime.fromisoformat(group).replace(tzinfo=dt.UTC).timestamp() / 86400 + MJD_1970


def make_raw(raw: Path, group: str, subbands=range(16)) -> list[Path]:
    """Raw subband files, opened 0-2 s apart like the correlator's."""
    start = dt.datetime.fromisoformat(group)
    paths = []
    for sb in subbands:
        path = raw / naming.raw_filename(start + dt.timedelta(seconds=sb % 3), sb)
        path.write_bytes(b"x" * (100 + sb))
        paths.append(path)
    return paths


def _dir_product(path: Path) -> Path:
    with atomic_output(path) as tmp:
        (tmp / "ANTENNA").mkdir(parents=True)
        (tmp / "table.dat").write_bytes(b"table")
    return path


def _file_product(path: Path, content: bytes = b"SIMPLE  = T") -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(content)
    return path


def ms_qa(group: str, flagged: float = 0.1, dec: float = 16.1) -> dict:
    start = dt.datetime.fromisoformat(group)
    return {
        "n_rows": 24 * 4656,
        "n_antennas": 96,
        "n_channels": 768,
        "freq_min_hz": 1.3114e9,
        "freq_max_hz": 1.4986e9,
        "time_start": start.isoformat() + "Z",
        "time_end": (start + dt.timedelta(seconds=309)).isoformat() + "Z",
        "ra_deg": 120.5,
        "dec_deg": dec,
        "pointing_dec_deg": dec,
        "flagged_fraction": flagged,
        "zero_fraction": 0.0,
        "rms_jy": 0.01,
    }


def make_ms(results: Path, group: str, inputs, *, flagged: float = 0.1, dec: float = 16.1) -> Path:
    """A Measurement Set folder plus its sidecar, as rule convert writes them."""
    product = _dir_product(Path(naming.ms_path(results, group)))
    qa = ms_qa(group, flagged, dec)
    write_sidecar(product, kind="ms", group=group, inputs=inputs, config={"flag": flagged}, qa=qa)
    return product


def caltable_qa(calgroup: str, passed: bool = True, dec: float = 16.1) -> dict:
    transit = dt.datetime.fromisoformat(calgroup) + dt.timedelta(seconds=150)
    return {
        "calibrator": "3C286",
        "refant": "24",
        "n_antennas": 96,
        "flagged_fraction": 0.05,
        "amp_scatter": 0.02,
        "phase_scatter_deg": 1.5,
        "snr_median": 150.0 if passed else 2.0,
        "passed": passed,
        "reason": "ok" if passed else "median SNR 2 below 10: calibrator absent or too faint",
        "transit_time": transit.isoformat(),
        "valid_start": (transit - dt.timedelta(hours=12)).isoformat(),
        "valid_end": (transit + dt.timedelta(hours=12)).isoformat(),
        "dec_deg": dec,
        "flux_measured_jy": 14.6,
        "flux_expected_jy": 14.65,
        "flux_ratio": 14.6 / 14.65,
    }


def make_caltable(results: Path, calgroup: str, ms: Path, *, passed: bool = True) -> Path:
    product = _dir_product(Path(naming.product_path(results, "caltable", calgroup)))
    (product / "bandpass.b").mkdir()  # solutions live inside the folder
    write_sidecar(
        product, kind="caltable", group=calgroup, inputs=[ms], qa=caltable_qa(calgroup, passed)
    )
    return product


def make_calibrated(
    results: Path, group: str, ms: Path, caltable: Path, *, inside: bool = False, rfi: float = 0.02
) -> Path:
    """``inside``: name a table inside the caltable folder as the input, as a stage may;
    ``rfi``: the fraction newly flagged as RFI (on top of the MS's 0.1)."""
    product = _dir_product(Path(naming.product_path(results, "calibrated", group)))
    start = dt.datetime.fromisoformat(group)
    qa = {
        "caltable": caltable.name,
        "separation_h": 0.1,
        "flagged_before": 0.1,
        "rfi_flagged_fraction": rfi,
        "flagged_fraction": 0.1 + rfi,
        "n_channels": 96,
        "ra_deg": 120.5,
        "dec_deg": 16.1,
        "time_start": start.isoformat(),
        "time_end": (start + dt.timedelta(seconds=309)).isoformat(),
    }
    cal_input = caltable / "bandpass.b" if inside else caltable
    write_sidecar(product, kind="calibrated", group=group, inputs=[ms, cal_input], qa=qa)
    return product


def image_qa(grade: str = "good", rms: float = 0.8e-3) -> dict:
    return {
        "rms_jy": rms,
        "peak_jy": 1.2,
        "dynamic_range": 1.2 / rms,
        "beam_major_arcsec": 25.0,
        "beam_minor_arcsec": 18.0,
        "beam_pa_deg": 12.0,
        "n_sources_5sigma": 42,
        "grade": grade,
        "thermal_rms_jy": 0.7e-3,
        "rms_over_thermal": rms / 0.7e-3,
        "imager": "wsclean",
        "ra_deg": 120.5,
        "dec_deg": 16.1,
        "freq_hz": 1.405e9,
    }


def make_image(results: Path, group: str, calibrated: Path, *, grade: str = "good", rms: float = 0.8e-3) -> Path:
    product = _file_product(Path(naming.product_path(results, "image", group)))
    write_sidecar(product, kind="image", group=group, inputs=[calibrated], qa=image_qa(grade, rms))
    return product


def photometry_table(group: str, n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    flux = rng.uniform(0.01, 1.0, n)
    return pa.table(
        {
            "source": [f"NVSS J{i:06d}" for i in range(n)],
            "ra_deg": rng.uniform(110, 130, n),
            "dec_deg": rng.uniform(14, 18, n),
            "flux_jy": flux,
            "flux_err_jy": np.full(n, 1e-3),
            "local_rms_jy": np.full(n, 0.9e-3),
            "pb": rng.uniform(0.1, 1.0, n),
            "flags": rng.integers(0, 4, n, dtype=np.int32),
            "mjd": np.full(n, mjd(group)),
        }
    )


def make_photometry(results: Path, group: str, image: Path, n: int = 50, seed: int = 0, table=None) -> Path:
    product = Path(naming.product_path(results, "photometry", group))
    table = photometry_table(group, n, seed) if table is None else table
    with atomic_output(product) as tmp:
        pq.write_table(table, tmp)
    qa = {"mjd": mjd(group), "n_flagged": 3, "n_sources": table.num_rows}
    write_sidecar(product, kind="photometry", group=group, inputs=[image, "catalogues/nvss.csv"], qa=qa)
    return product


def make_chain(
    raw: Path, results: Path, group: str = GROUP, calgroup: str = CALGROUP, *, rfi: float = 0.02, **image_kw
) -> dict[str, Path]:
    """Raw files -> MS -> calibrated (with a caltable from the calibrator group) -> image -> photometry."""
    paths: dict[str, Path] = {}
    cal_ms = Path(naming.ms_path(results, calgroup))
    if not cal_ms.exists():
        cal_ms = make_ms(results, calgroup, make_raw(raw, calgroup))
    caltable = Path(naming.product_path(results, "caltable", calgroup))
    if not caltable.exists():
        caltable = make_caltable(results, calgroup, cal_ms)
    paths["cal_ms"], paths["caltable"] = cal_ms, caltable
    paths["raw"] = make_raw(raw, group)
    paths["ms"] = make_ms(results, group, paths["raw"])
    paths["calibrated"] = make_calibrated(results, group, paths["ms"], caltable, rfi=rfi)
    paths["image"] = make_image(results, group, paths["calibrated"], **image_kw)
    paths["photometry"] = make_photometry(results, group, paths["image"])
    return paths
