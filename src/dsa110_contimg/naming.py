"""The one place that knows how raw files and products are named.

Rules, scripts, the database and the CLI build every path through these
functions and parse names back with them, so a change of layout is a change
here and nowhere else.

Times are UTC. Functions accept naive datetimes (taken as UTC) or aware ones
(converted to UTC) and return aware UTC datetimes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S"
N_SUBBANDS = 16
RAW_SUFFIX = ".hdf5"

#: Regex of a group id (a UTC timestamp), for Snakemake ``wildcard_constraints``.
GROUP_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"

# A name that claims to be an observation: starts like a timestamp, ends in
# .hdf5. Such a name that is not exactly right is an error, not noise.
_LOOKS_RAW = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T.*\.hdf5")
_RAW = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})_sb([0-9]{2})\.hdf5"
)
_RAW_TEMPLATE = "0000-00-00T00:00:00_sb00.hdf5"
_RAW_LEN = len(_RAW_TEMPLATE)
_DIGITS = [i for i, c in enumerate(_RAW_TEMPLATE) if c == "0"]
_LITERALS = [i for i, c in enumerate(_RAW_TEMPLATE) if c != "0"]
_LITERAL_BYTES = np.frombuffer(_RAW_TEMPLATE.encode(), np.uint8)[_LITERALS]

#: kind -> (folder under results_dir, file name template). Later stages add
#: their products here; nothing else formats a product path.
PRODUCTS: dict[str, tuple[str, str]] = {
    "ms": ("ms", "{group}.ms"),
    "caltable": ("caltables", "{group}"),  # a folder: bandpass + gain tables of a calibrator group
    "calibrated": ("calibrated", "{group}.ms"),
    "image": ("images", "{group}.image.fits"),
    "residual": ("images", "{group}.residual.fits"),
    "psf": ("images", "{group}.psf.fits"),
    "pb": ("images", "{group}.pb.fits"),
    "pbcor": ("images", "{group}.pbcor.fits"),
    "thumbnail": ("images", "{group}.png"),
    "photometry": ("photometry", "{group}.parquet"),
    "new_sources": ("photometry", "{group}.new_sources.csv"),
    # Fan-in products: "{group}" is the name of the set of light curves ("all").
    "lightcurves": ("lightcurves", "{group}.parquet"),
    "lightcurve_epochs": ("lightcurves", "{group}.epochs.csv"),
    "variability": ("variability", "{group}.parquet"),
    "ese_candidates": ("variability", "ese_candidates.csv"),
    "ese_plot": ("variability", "ese_candidates.png"),
}


#: Mosaic tiers, smallest first (config ``mosaic.tiers``).
MOSAIC_TIERS = ("quicklook", "science", "deep")

#: Regex of a mosaic name: a UTC day ``YYYY-MM-DD``, an hour ``YYYY-MM-DDTHH``,
#: ``latest`` or a region name from the config. No dots, so ``{name}.fits`` and
#: ``{name}.noise.fits`` can never be confused.
MOSAIC_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"

#: kind -> file name suffix of the products of one mosaic, all in
#: ``results/mosaics/{tier}/``: the plan (which images, why others were left
#: out), the mosaic, its noise and weights maps, and the QA preview.
MOSAIC_PRODUCTS: dict[str, str] = {
    "mosaic_plan": ".plan.json",
    "mosaic": ".fits",
    "mosaic_noise": ".noise.fits",
    "mosaic_weights": ".weights.fits",
    "mosaic_qa": ".qa.png",
}


class RawNameError(ValueError):
    """A file name that looks like a raw observation but is not a valid one."""


# ---------------------------------------------------------------- timestamps


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


def format_timestamp(dt: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC.

    The fraction of a second is dropped (not rounded), as the correlator does
    when it names a file after the wall-clock second it was opened in.
    """
    return _utc(dt).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Inverse of :func:`format_timestamp`; raises ValueError on anything else."""
    if not re.fullmatch(GROUP_PATTERN, text):
        raise ValueError(f"{text!r} is not a timestamp of the form YYYY-MM-DDTHH:MM:SS")
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)


def format_epoch_seconds(seconds: np.ndarray) -> list[str]:
    """:func:`format_timestamp` of many times given as seconds since 1970 UTC."""
    return np.asarray(seconds, dtype=np.int64).astype("datetime64[s]").astype(str).tolist()


def _group_id(group: str | datetime) -> str:
    """A group id as given, or formatted from a datetime.

    Strings are passed through unchecked so that Snakemake wildcard
    placeholders such as ``"{group}"`` work.
    """
    return format_timestamp(group) if isinstance(group, datetime) else group


# ----------------------------------------------------------------- raw files


def raw_filename(dt: datetime, subband: int) -> str:
    """Name of one raw subband file, e.g. ``2025-06-15T06:00:00_sb03.hdf5``."""
    if not 0 <= subband < N_SUBBANDS:
        raise ValueError(f"subband {subband} outside 0..{N_SUBBANDS - 1}")
    return f"{format_timestamp(dt)}_sb{subband:02d}{RAW_SUFFIX}"


def looks_like_raw(name: str) -> bool:
    """Whether a name claims to be a raw observation file (valid or not)."""
    return _LOOKS_RAW.fullmatch(os.path.basename(name)) is not None


def parse_raw_filename(name: str) -> tuple[datetime, int]:
    """``(start time, subband)`` of a raw file name or path.

    Raises :class:`RawNameError` naming the file when the name is not exactly
    ``YYYY-MM-DDTHH:MM:SS_sbNN.hdf5`` with a real date and NN in 00..15.
    """
    base = os.path.basename(name)
    match = _RAW.fullmatch(base)
    if match is None:
        raise RawNameError(
            f"{name!r}: raw file names must be YYYY-MM-DDTHH:MM:SS_sbNN{RAW_SUFFIX}"
        )
    year, month, day, hour, minute, second, subband = map(int, match.groups())
    try:
        dt = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as err:
        raise RawNameError(f"{name!r}: invalid timestamp ({err})") from None
    if subband >= N_SUBBANDS:
        raise RawNameError(f"{name!r}: subband {subband} outside 00..{N_SUBBANDS - 1:02d}")
    return dt, subband


def is_raw_name(name: str) -> bool:
    """Whether a name or path is a valid raw observation file name."""
    try:
        parse_raw_filename(name)
    except RawNameError:
        return False
    return True


@dataclass(frozen=True)
class RawListing:
    """A directory listing sorted into raw files, bad raw names and the rest.

    ``names``, ``seconds`` and ``subbands`` are parallel: the valid raw names
    as given, their start times in seconds since 1970-01-01 UTC (int64) and
    their subband numbers.
    """

    names: list[str]
    seconds: np.ndarray
    subbands: np.ndarray
    invalid: dict[str, str]  # name -> why it is not a valid raw name
    ignored: list[str]  # names that do not claim to be observations


def classify_raw_names(names: Iterable[str]) -> RawListing:
    """Parse many raw names at once; the vectorised twin of :func:`parse_raw_filename`.

    A month of listings is ~134,000 names, parsed every time Snakemake reads
    the workflow, so the names are checked and decoded as one numpy byte
    matrix rather than one regex and one ``datetime`` per name.
    """
    names = list(names)
    bases = [name.rpartition(os.sep)[2] for name in names]
    fixed = [i for i, base in enumerate(bases) if len(base) == _RAW_LEN]
    # "replace" keeps one byte per character, so the rows stay aligned.
    blob = "".join([bases[i] for i in fixed]).encode("ascii", "replace")
    chars = np.frombuffer(blob, dtype=np.uint8).reshape(len(fixed), _RAW_LEN)
    digits = chars[:, _DIGITS].astype(np.int64) - ord("0")
    shaped = np.all(chars[:, _LITERALS] == _LITERAL_BYTES, axis=1)
    shaped &= np.all((digits >= 0) & (digits <= 9), axis=1)

    def number(*columns: int) -> np.ndarray:
        value = np.zeros(len(fixed), np.int64)
        for column in columns:
            value = value * 10 + digits[:, _DIGITS.index(column)]
        return value

    year, month, day = number(0, 1, 2, 3), number(5, 6), number(8, 9)
    hour, minute, second = number(11, 12), number(14, 15), number(17, 18)
    subband = number(22, 23)
    valid = shaped & (month >= 1) & (month <= 12) & (day >= 1) & (year >= 1)
    valid &= (hour < 24) & (minute < 60) & (second < 60) & (subband < N_SUBBANDS)
    months = ((year - 1970) * 12 + np.clip(month, 1, 12) - 1).astype("datetime64[M]")
    first_day = months.astype("datetime64[D]")
    valid &= day <= ((months + 1).astype("datetime64[D]") - first_day).astype(np.int64)
    seconds = (first_day.astype(np.int64) + day - 1) * 86400 + hour * 3600 + minute * 60 + second

    good = np.zeros(len(names), bool)
    good[np.asarray(fixed, dtype=np.intp)[valid]] = True
    invalid: dict[str, str] = {}
    ignored: list[str] = []
    for i in np.flatnonzero(~good).tolist():
        if _LOOKS_RAW.fullmatch(bases[i]):
            invalid[names[i]] = _reason(names[i])
        else:
            ignored.append(names[i])
    return RawListing(
        [names[i] for i in np.flatnonzero(good).tolist()], seconds[valid], subband[valid], invalid, ignored
    )


def _reason(name: str) -> str:
    """The message :func:`parse_raw_filename` gives for a bad name."""
    try:
        parse_raw_filename(name)
    except RawNameError as err:
        return str(err)
    raise AssertionError(f"{name!r} was classified invalid but parses")  # pragma: no cover


# ------------------------------------------------------------------ products


def product_path(results_dir: str | os.PathLike, kind: str, group: str | datetime) -> str:
    """Path of one product of one group, e.g. ``results/ms/{group}.ms``."""
    try:
        folder, template = PRODUCTS[kind]
    except KeyError:
        raise ValueError(f"unknown product kind {kind!r}; known: {sorted(PRODUCTS)}") from None
    return os.path.join(os.fspath(results_dir), folder, template.format(group=_group_id(group)))


def ms_path(results_dir: str | os.PathLike, group: str | datetime) -> str:
    """The Measurement Set made by rule convert: ``results/ms/{group}.ms``."""
    return product_path(results_dir, "ms", group)


def calflux_path(results_dir: str | os.PathLike) -> str:
    """The calibrator flux monitoring table (one for the whole run)."""
    return os.path.join(os.fspath(results_dir), "calibration", "calibrator_flux.csv")


def mosaic_path(results_dir: str | os.PathLike, tier: str, name: str, kind: str = "mosaic") -> str:
    """A product of one mosaic, e.g. ``results/mosaics/science/2025-06-15.fits``.

    ``kind`` is one of :data:`MOSAIC_PRODUCTS`. ``tier`` and ``name`` are passed
    through unchecked so that Snakemake placeholders such as ``"{tier}"`` work.
    """
    try:
        suffix = MOSAIC_PRODUCTS[kind]
    except KeyError:
        raise ValueError(f"unknown mosaic product kind {kind!r}; known: {sorted(MOSAIC_PRODUCTS)}") from None
    return os.path.join(os.fspath(results_dir), "mosaics", tier, f"{name}{suffix}")


def mosaic_outcome_path(results_dir: str | os.PathLike, tier: str, name: str) -> str:
    """What became of one mosaic (built, or why not): ``results/mosaics/{tier}/{name}.outcome.json``.

    A workflow record (rule mosaic_outcome), not a product: not registered.
    """
    return os.path.join(os.fspath(results_dir), "mosaics", tier, f"{name}.outcome.json")


def parse_mosaic_path(path: str | os.PathLike) -> tuple[str, str, str]:
    """``(tier, name, kind)`` of a mosaic product path; inverse of :func:`mosaic_path`."""
    parts = os.fspath(path).split(os.sep)
    base = parts[-1]
    tier = parts[-2] if len(parts) >= 2 else ""
    if len(parts) < 3 or parts[-3] != "mosaics" or tier not in MOSAIC_TIERS:
        raise ValueError(f"{os.fspath(path)!r} is not under mosaics/<tier>/ with tier one of {MOSAIC_TIERS}")
    # Longest suffix first: ".noise.fits" before ".fits".
    for kind, suffix in sorted(MOSAIC_PRODUCTS.items(), key=lambda item: -len(item[1])):
        name = base[: -len(suffix)]
        if base.endswith(suffix) and re.fullmatch(MOSAIC_NAME_PATTERN, name):
            return tier, name, kind
    raise ValueError(f"{os.fspath(path)!r} is not a mosaic product name ({MOSAIC_NAME_PATTERN} + a known suffix)")


def sidecar_path(product: str | os.PathLike) -> str:
    """The JSON sidecar that describes a product: ``<product>.json``."""
    return os.fspath(product) + ".json"


def log_path(results_dir: str | os.PathLike, rule: str, wildcard: str) -> str:
    """Log of one job: ``results/logs/{rule}/{wildcard}.log``."""
    return os.path.join(os.fspath(results_dir), "logs", rule, f"{wildcard}.log")


def benchmark_path(results_dir: str | os.PathLike, rule: str, wildcard: str) -> str:
    """Snakemake benchmark TSV of one job: ``results/benchmarks/{rule}/{wildcard}.tsv``."""
    return os.path.join(os.fspath(results_dir), "benchmarks", rule, f"{wildcard}.tsv")


def database_path(results_dir: str | os.PathLike) -> str:
    """The default SQLite product database: ``results/products.sqlite``."""
    return os.path.join(os.fspath(results_dir), "products.sqlite")

