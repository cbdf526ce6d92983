"""RFI flagging of target (or any) Measurement Sets, in place.

Two methods, chosen in config (``calibration.target_rfi``):

* ``aoflagger``: AOFlagger's SumThreshold strategy (the pip wheel ``aoflagger``,
  which ships its strategy files: ``generic-default``, ``jvla-default``,
  ``atca-l-band``, ...), run per baseline on the time-frequency plane of both
  polarisations; the flags of one baseline apply to both polarisations;
* ``casa``: CASA ``flagdata`` ``tfcrop`` then ``rflag``.

The MS is read and written with casatools, one ANTENNA1 at a time, so memory
stays at about 1/96 of the data column. Only the job's own output is flagged
(the apply stage runs this on its atomic temporary, never on its input).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import casa_env

METHODS = ("aoflagger", "casa", "none")


class FlaggingError(RuntimeError):
    """Flagging could not run; the message names the MS or strategy and why."""


@dataclass(frozen=True)
class FlagOptions:
    """How to flag RFI."""

    method: str = "aoflagger"
    """aoflagger, casa (tfcrop + rflag) or none."""
    strategy: str = "generic-default"
    """AOFlagger strategy: the name of one it ships (without .lua) or a path to a .lua file."""
    datacolumn: str = "DATA"
    """Column flagged (the calibrated MS holds its corrected data as DATA)."""
    base_threshold: float | None = 2.0
    """AOFlagger SumThreshold base threshold written over the strategy's own (None: keep it).

    The shipped strategies use 1.0; on a field with a bright calibrator in the
    beam that flags ~10% of clean data (see tests/test_flagging.py), 2.0 none,
    while RFI of 5 sigma and more per visibility is still all found."""


def strategy_path(strategy: str) -> Path:
    """The .lua file of an AOFlagger strategy given by shipped name or path."""
    import aoflagger

    path = Path(strategy)
    if path.suffix == ".lua":
        if not path.is_file():
            raise FlaggingError(f"AOFlagger strategy file {path} does not exist")
        return path
    shipped = Path(aoflagger.AOFlagger().find_strategy_file(aoflagger.TelescopeId.Generic)).parent
    path = shipped / f"{strategy}.lua"
    if not path.is_file():
        names = sorted(p.stem for p in shipped.glob("*.lua"))
        raise FlaggingError(f"unknown AOFlagger strategy {strategy!r}; shipped: {', '.join(names)}")
    return path


BASE_THRESHOLD = re.compile(r"^(\s*local base_threshold\s*=\s*)[0-9.eE+-]+", re.MULTILINE)


def strategy_text(path: Path, base_threshold: float | None) -> str:
    """The strategy's Lua source with its base threshold set (unchanged when None)."""
    text = path.read_text()
    if base_threshold is None:
        return text
    new, n = BASE_THRESHOLD.subn(lambda m: f"{m.group(1)}{float(base_threshold)!r}", text)
    if n != 1:
        raise FlaggingError(f"AOFlagger strategy {path} has {n} 'local base_threshold = ...' settings, not one: "
                            "set calibration.target_rfi.base_threshold to null to run it as it is")
    return new


def cross_flag_fraction(ms: str) -> float:
    """Fraction of cross-correlation visibilities flagged."""
    tb = casa_env.casatools().table()
    tb.open(ms)
    try:
        q = tb.query("ANTENNA1 != ANTENNA2")
        try:
            flags = q.getcol("FLAG")
        finally:
            q.close()
    finally:
        tb.close()
    return float(flags.mean()) if flags.size else 1.0


def _aoflag_baseline(flagger, strategy, vis: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """New flags (chan, time) of one baseline; ``vis`` and ``flags`` are (pol, chan, time)."""
    n_pol, n_chan, n_time = vis.shape
    images = flagger.make_image_set(n_time, n_chan, 2 * n_pol)
    for p in range(n_pol):
        images.set_image_buffer(2 * p, vis[p].real.astype(np.float64))
        images.set_image_buffer(2 * p + 1, vis[p].imag.astype(np.float64))
    existing = flagger.make_flag_mask(n_time, n_chan, False)
    existing.get_buffer()[:] = flags.any(axis=0)
    return np.asarray(strategy.run(images, existing).get_buffer(), bool)


def flag_aoflagger(ms: str, opts: FlagOptions, log=None) -> None:
    """Run AOFlagger on every cross-correlation baseline of ``ms`` and OR its flags into FLAG."""
    import aoflagger

    flagger = aoflagger.AOFlagger()
    text = strategy_text(strategy_path(opts.strategy), opts.base_threshold)
    with tempfile.TemporaryDirectory(prefix="aoflagger-") as tmp:
        lua = Path(tmp) / "strategy.lua"
        lua.write_text(text)
        strategy = flagger.load_strategy_file(str(lua))
    tb = casa_env.casatools().table()
    if not tb.open(ms, nomodify=False):
        raise FlaggingError(f"{ms}: cannot open the Measurement Set for flagging")
    try:
        if opts.datacolumn not in tb.colnames():
            raise FlaggingError(f"{ms}: no column {opts.datacolumn} to flag")
        for a1 in np.unique(tb.getcol("ANTENNA1")):
            sub = tb.query(f"ANTENNA1 == {int(a1)} && ANTENNA2 != {int(a1)}")
            try:
                if sub.nrows() == 0:
                    continue
                vis = sub.getcol(opts.datacolumn)  # (pol, chan, row)
                flags = sub.getcol("FLAG")
                a2, time = sub.getcol("ANTENNA2"), sub.getcol("TIME")
                for ant in np.unique(a2):
                    rows = np.flatnonzero(a2 == ant)
                    rows = rows[np.argsort(time[rows], kind="stable")]
                    if flags[:, :, rows].all() or rows.size < 2:
                        continue
                    new = _aoflag_baseline(flagger, strategy, vis[:, :, rows], flags[:, :, rows])
                    flags[:, :, rows] |= new[None, :, :]
                sub.putcol("FLAG", flags)
            finally:
                sub.close()
    finally:
        tb.close()


def flag_casa(ms: str, opts: FlagOptions, log=None) -> None:
    """CASA flagdata tfcrop, then rflag, on ``opts.datacolumn``."""
    cta = casa_env.casatasks()
    column = opts.datacolumn.lower()
    for mode in ("tfcrop", "rflag"):
        result = cta.flagdata(vis=ms, mode=mode, datacolumn=column, flagbackup=False)
        if result is False:
            raise FlaggingError(f"{ms}: CASA flagdata {mode} failed")


def flag_rfi(ms: str, opts: FlagOptions, log=None) -> dict:
    """Flag RFI in ``ms`` in place; returns the sidecar QA of the flagging.

    Keys: ``rfi_method``, ``rfi_strategy``, ``flagged_before`` (cross-correlation
    fraction flagged before), ``flagged_fraction`` (after) and
    ``rfi_flagged_fraction`` (the fraction newly flagged as RFI).
    """
    if opts.method not in METHODS:
        raise FlaggingError(f"unknown RFI flagging method {opts.method!r}; choose one of {', '.join(METHODS)}")
    before = cross_flag_fraction(ms)
    if opts.method == "aoflagger":
        flag_aoflagger(ms, opts, log)
    elif opts.method == "casa":
        flag_casa(ms, opts, log)
    after = cross_flag_fraction(ms) if opts.method != "none" else before
    qa = {
        "rfi_method": opts.method,
        "rfi_strategy": opts.strategy if opts.method == "aoflagger" else None,
        "rfi_base_threshold": opts.base_threshold if opts.method == "aoflagger" else None,
        "flagged_before": before,
        "flagged_fraction": after,
        "rfi_flagged_fraction": after - before,
    }
    if log is not None:
        log.info("RFI flagging (%s) of %s: %.2f%% newly flagged, %.2f%% flagged in all",
                 opts.method, ms, 100 * (after - before), 100 * after)
    return qa
