"""The reference catalogue of forced photometry: load, map columns, cut, select by footprint.

A user supplies a source list (an NVSS extract, say) as CSV, FITS or VOTable;
``catalogue.columns`` in the config says which of its columns hold the name,
RA, Dec and flux density, ``catalogue.flux_unit`` what unit the flux is in.
The demo uses the simulator's truth ``truth/sky.csv``, whose column names are
the defaults. Every loaded catalogue has the standard columns of
:data:`COLUMNS` (RA/Dec in degrees, flux in Jy), whatever the file called them.

RA and Dec may be numbers (degrees) or sexagesimal text (``"12 34 56.7"``,
``"12:34:56.7"``: RA in hours, Dec in degrees), as NVSS extracts often have.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import default

#: Standard columns of a loaded catalogue, in this order.
COLUMNS = ("name", "ra_deg", "dec_deg", "flux_jy")

FORMATS = ("auto", "csv", "fits", "votable")
_SUFFIX_FORMAT = {
    ".csv": "csv", ".txt": "csv", ".tsv": "csv", ".fits": "fits", ".fit": "fits", ".fits.gz": "fits",
    ".vot": "votable", ".votable": "votable", ".xml": "votable",
}
FLUX_UNITS = {"Jy": 1.0, "mJy": 1e-3, "uJy": 1e-6}


class CatalogueError(ValueError):
    """A catalogue that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class CatalogueOptions:
    """Where the reference catalogue is and how to read it (config section ``catalogue``)."""

    path: str | None = default("catalogue.path")
    """CSV, FITS or VOTable file; None means no reference catalogue."""
    format: str = default("catalogue.format")
    """csv, fits, votable, or auto (from the file name's suffix)."""
    columns: Mapping[str, str] = field(
        default_factory=lambda: {"name": "name", "ra_deg": "ra_deg", "dec_deg": "dec_deg", "flux_jy": "flux_jy"}
    )
    """Standard column -> the file's column (name, ra_deg, dec_deg, flux_jy)."""
    flux_unit: str = default("catalogue.flux_unit")
    """Unit of the file's flux column: Jy, mJy or uJy."""
    flux_min_jy: float = default("catalogue.flux_min_jy")
    """Forced photometry only of sources at least this bright (Jy); all are used to match blind detections."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CatalogueOptions:
        """From a validated pipeline config (its ``catalogue`` section)."""
        section = dict(config.get("catalogue", {}))
        columns = {**cls().columns, **dict(section.pop("columns", {}) or {})}
        return cls(columns=columns, **section)


def _format_of(path: Path, fmt: str) -> str:
    if fmt != "auto":
        if fmt not in FORMATS:
            raise CatalogueError(f"{path}: unknown catalogue format {fmt!r} (known: {', '.join(FORMATS)})")
        return fmt
    name = path.name.lower()
    for suffix, kind in sorted(_SUFFIX_FORMAT.items(), key=lambda kv: -len(kv[0])):
        if name.endswith(suffix):
            return kind
    raise CatalogueError(
        f"{path}: cannot tell the catalogue format from the name; set catalogue.format "
        f"to one of {', '.join(FORMATS[1:])}"
    )


def read_table(path: str | os.PathLike, fmt: str = "auto") -> pd.DataFrame:
    """The catalogue file as a DataFrame with the file's own column names."""
    path = Path(path)
    if not path.exists():
        raise CatalogueError(f"catalogue {path} does not exist (set catalogue.path in the config)")
    kind = _format_of(path, fmt)
    try:
        if kind == "csv":
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            return pd.read_csv(path, sep=sep, comment="#", skipinitialspace=True)
        from astropy.table import Table

        table = Table.read(path, format="fits" if kind == "fits" else "votable")
        for name in table.colnames:  # multidimensional columns cannot go into a DataFrame
            if table[name].ndim > 1:
                table.remove_column(name)
        frame = table.to_pandas()
        for name in frame.columns:  # FITS strings come back as bytes
            if frame[name].dtype == object and len(frame) and isinstance(frame[name].iloc[0], bytes):
                frame[name] = frame[name].str.decode("utf-8").str.strip()
        return frame
    except CatalogueError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:  # what the CSV/FITS/VOTable readers raise
        raise CatalogueError(f"catalogue {path}: cannot read it as {kind}: {exc}") from exc


def _angles(values: pd.Series, hours: bool, what: str, path: Path) -> np.ndarray:
    """Degrees from numbers or sexagesimal strings (RA in hours when ``hours``)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(float)
    from astropy.coordinates import Angle

    text = values.astype(str).str.strip().str.replace(r"[\s]+", ":", regex=True)
    try:
        angle = Angle(text.to_numpy(), unit="hourangle" if hours else "deg")
    except (ValueError, TypeError) as exc:
        raise CatalogueError(f"catalogue {path}: column for {what} is neither degrees nor sexagesimal: {exc}") from None
    return np.asarray(angle.deg, float)


def standardise(frame: pd.DataFrame, opts: CatalogueOptions, path: str | os.PathLike = "<table>") -> pd.DataFrame:
    """The standard columns (:data:`COLUMNS`) from a raw table, using ``opts.columns``.

    Rows without a finite position are dropped; a missing flux becomes NaN
    (such a source is measured only when ``flux_min_jy`` is 0).
    """
    path = Path(path)
    unknown = set(opts.columns) - set(COLUMNS)
    if unknown:
        raise CatalogueError(f"catalogue.columns: unknown standard columns {sorted(unknown)} (known: {list(COLUMNS)})")
    wanted = {std: opts.columns.get(std, std) for std in COLUMNS}
    missing = {std: col for std, col in wanted.items() if col not in frame.columns}
    if missing:
        listed = ", ".join(f"{col!r} (for {std})" for std, col in missing.items())
        raise CatalogueError(
            f"catalogue {path} lacks columns {listed}; it has {list(frame.columns)}. "
            "Map them with catalogue.columns in the config, e.g. {ra_deg: RAJ2000}"
        )
    if opts.flux_unit not in FLUX_UNITS:
        raise CatalogueError(f"catalogue.flux_unit {opts.flux_unit!r} is not one of {list(FLUX_UNITS)}")
    out = pd.DataFrame(
        {
            "name": frame[wanted["name"]].astype(str).str.strip().to_numpy(),
            "ra_deg": _angles(frame[wanted["ra_deg"]], True, "ra_deg", path) % 360.0,
            "dec_deg": _angles(frame[wanted["dec_deg"]], False, "dec_deg", path),
            "flux_jy": pd.to_numeric(frame[wanted["flux_jy"]], errors="coerce").to_numpy(float)
            * FLUX_UNITS[opts.flux_unit],
        }
    )
    good = np.isfinite(out.ra_deg) & np.isfinite(out.dec_deg) & (np.abs(out.dec_deg) <= 90)
    out = out[good].reset_index(drop=True)
    dupes = out.name[out.name.duplicated()].unique()
    if len(dupes):
        raise CatalogueError(
            f"catalogue {path}: source names must be unique; repeated: {', '.join(map(str, dupes[:5]))}"
            + (f" and {len(dupes) - 5} more" if len(dupes) > 5 else "")
        )
    return out


def load_catalogue(opts: CatalogueOptions) -> pd.DataFrame:
    """The reference catalogue with the standard columns, every source (no flux cut).

    Raises :class:`CatalogueError` naming the file for a missing file, an
    unreadable one, or missing columns.
    """
    if not opts.path:
        raise CatalogueError("no reference catalogue: set catalogue.path in the config")
    return standardise(read_table(opts.path, opts.format), opts, opts.path)


def check_catalogue(config: Mapping[str, Any]) -> str | None:
    """Parse-time check: why the configured catalogue cannot be used, or None if it can.

    Reads only the header (CSV) or the table (FITS/VOTable, small next to a
    night's images). None is also returned when no catalogue is configured.
    """
    opts = CatalogueOptions.from_config(config)
    if not opts.path:
        return None
    try:
        path = Path(opts.path)
        if _format_of(path, opts.format) == "csv" and path.exists():
            head = pd.read_csv(path, comment="#", skipinitialspace=True, nrows=5)
            standardise(head, opts, path)
        else:
            load_catalogue(opts)
    except (CatalogueError, OSError, pd.errors.ParserError) as exc:
        return str(exc)
    return None


def flux_cut(cat: pd.DataFrame, flux_min_jy: float) -> pd.DataFrame:
    """Sources with ``flux_jy >= flux_min_jy`` (all, NaN fluxes included, when the cut is 0)."""
    if flux_min_jy <= 0:
        return cat
    return cat[cat.flux_jy >= flux_min_jy].reset_index(drop=True)


def separation_deg(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance (degrees), haversine formula; broadcasts."""
    ra1, dec1, ra2, dec2 = (np.radians(np.asarray(x, float)) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def in_footprint(
    cat: pd.DataFrame, wcs, shape: tuple[int, int], valid: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Catalogue sources that fall on the image, with their pixel positions.

    ``wcs`` is the celestial WCS of an image of ``shape`` (ny, nx); ``valid``
    (boolean, that shape) marks the usable pixels (e.g. finite and primary
    beam above the cut-off): a source is kept when the pixel under it is.
    A cone around the image centre is cut first, so a catalogue of the whole
    sky costs one vectorised distance, not one projection per source.
    Returns (sources, x, y) with 0-based pixel coordinates.
    """
    ny, nx = shape
    if len(cat) == 0:
        return cat.iloc[:0], np.empty(0), np.empty(0)
    corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1], [(nx - 1) / 2, (ny - 1) / 2]], float)
    world = wcs.all_pix2world(corners, 0)
    ra_c, dec_c = world[4]
    radius = np.nanmax(separation_deg(ra_c, dec_c, world[:4, 0], world[:4, 1]))
    if not np.isfinite(radius):  # a projection whose corners are off the sphere
        radius = 180.0
    near = separation_deg(ra_c, dec_c, cat.ra_deg.to_numpy(), cat.dec_deg.to_numpy()) <= radius * 1.05 + 1e-6
    sub = cat[near]
    if len(sub) == 0:
        return sub.reset_index(drop=True), np.empty(0), np.empty(0)
    with np.errstate(invalid="ignore"):
        x, y = wcs.all_world2pix(sub.ra_deg.to_numpy(), sub.dec_deg.to_numpy(), 0)
    ok = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5)
    if valid is not None:
        ix = np.clip(np.round(x).astype(int), 0, nx - 1)
        iy = np.clip(np.round(y).astype(int), 0, ny - 1)
        ok &= np.where(ok, valid[iy, ix], False)
    return sub[ok].reset_index(drop=True), x[ok], y[ok]


__all__ = [
    "COLUMNS",
    "CatalogueError",
    "CatalogueOptions",
    "check_catalogue",
    "flux_cut",
    "in_footprint",
    "load_catalogue",
    "read_table",
    "separation_deg",
    "standardise",
]
