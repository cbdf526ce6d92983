"""Small simulated data sets and a CASA runner shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from dsa110_contimg import geometry
from dsa110_contimg.sim.observation import SimOptions, simulate_span
from dsa110_contimg.telescope import INTEGRATION_S

START = datetime(2025, 6, 15, 13, 20, 0)

SMALL = SimOptions(start=START, n_obs=1, n_ants=8, n_chan=8, n_int=3, n_sources=3, seed=7)
"""Tiny but complete: 16 subbands of 8 channels, 8 antennas, 3 integrations."""


def mid_jd(opts: SimOptions) -> float:
    from astropy.time import Time

    return Time(opts.start).jd + opts.n_int * INTEGRATION_S / 2 / 86400


def transit_start(name: str = "3C286", before_s: float = 100.0, after: datetime = START) -> datetime:
    """A start time (whole seconds) ``before_s`` before calibrator ``name``'s first transit after ``after``."""
    from astropy import units as u
    from astropy.time import Time

    from dsa110_contimg.calibration.calibrators import load_calibrators

    cal = load_calibrators().set_index("name").loc[name]
    t0 = Time(after)
    dra = (np.radians(cal.ra_deg) - geometry.lst(np.array([t0.jd]))[0]) % (2 * np.pi)
    transit = t0 + dra / (2 * np.pi) * 0.99726957 * u.day
    return (transit - before_s * u.s).to_datetime().replace(microsecond=0)


def point_sky(opts: SimOptions, offsets_deg=((0.0, 0.0),), flux_jy=1.0, spectral_index=-0.7) -> pd.DataFrame:
    """Point sources at (dRA cos dec, dDec) offsets from the meridian at mid time (ICRS)."""
    ra0, dec0 = geometry.meridian_icrs(mid_jd(opts), np.radians(opts.dec_deg))
    rows = []
    for k, (dx, dy) in enumerate(offsets_deg):
        dec = np.degrees(dec0) + dy
        ra = np.degrees(ra0) + dx / np.cos(np.radians(dec))
        rows.append(dict(name=f"P{k}", ra_deg=ra, dec_deg=dec, flux_jy=flux_jy,
                         spectral_index=spectral_index, kind="field"))
    return pd.DataFrame(rows)


def simulate(tmp: Path, opts: SimOptions = SMALL, sky: pd.DataFrame | None = None, **changes) -> list[Path]:
    """Simulate into ``tmp/raw`` (truth in ``tmp/truth``); returns the files, sb00 first."""
    opts = replace(opts, **changes)
    files = simulate_span(tmp / "raw", opts, tmp / "truth", sky=sky)
    return sorted(files, key=lambda p: p.name[-7:])


def run_casa(code: str, cwd: Path, env: dict | None = None) -> dict:
    """Run ``code`` in a fresh Python with casatools/casatasks set up offline.

    The code sees ``ct`` (casatools), ``cta`` (casatasks), ``np`` and must
    assign a JSON-able ``result``. A separate process keeps CASA's casacore
    away from python-casacore's in the test process.
    """
    prog = textwrap.dedent(
        """
        import json, numpy as np
        from dsa110_contimg import casa_env
        casa_env.configure(logfile="casa-test.log")
        ct = casa_env.casatools(); cta = casa_env.casatasks()
        """
    ) + textwrap.dedent(code) + "\nprint('RESULT=' + json.dumps(result))\n"
    out = subprocess.run([sys.executable, "-c", prog], cwd=cwd, capture_output=True, text=True,
                         env=os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {}), timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT=")]
    if out.returncode or not lines:
        raise AssertionError(f"CASA step failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT="):])
