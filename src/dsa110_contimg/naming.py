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
from datetime import UTC, datetime

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

#: Mosaic tiers, smallest first (config ``mosaic.tiers``).
MOSAIC_TIERS = ("quicklook", "science", "deep")

#: Regex of a mosaic name: a UTC day ``YYYY-MM-DD``, an hour ``YYYY-MM-DDTHH``,
#: ``latest`` or a region name from the config. No dots, so ``{name}.fits`` and
#: ``{name}.noise.fits`` can never be confused.
MOSAIC_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]*"



class RawNameError(ValueError):
    """A file name that looks like a raw observation but is not a valid one."""


# ---------------------------------------------------------------- timestamps


def _utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


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
    return datetime.strptime(text, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


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
        dt = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
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


@dataclass(frozen=True)
class ProductKind:
    """One kind of product: where it lives, which rule writes it, how it is recorded.

    ``folder`` (under results_dir) and ``template`` take the rule's wildcards
    (``{group}``, ``{calgroup}``, ``{name}``, ``{tier}``, ``{mosaic}``).
    ``sidecar``: the product has a JSON sidecar of its own, of this kind, and is
    registered in the database as ``model`` (a class of :mod:`.db.schema`).
    Kinds without one (e.g. the PSF) are listed in the sidecar of the rule's
    main product.
    """

    name: str
    folder: str
    template: str
    rule: str
    model: str | None = None
    directory: bool = False
    """The product is a folder (a Measurement Set, a set of caltables)."""
    intermediate: bool = False
    """Regenerable, read once downstream: removed by the workflow once used when
    ``retention.intermediates`` is ``temp`` (its sidecar stays)."""

    @property
    def sidecar(self) -> bool:
        return self.model is not None

    def path(self, results_dir: str | os.PathLike, **wildcards: str) -> str:
        try:
            rel = os.path.join(self.folder, self.template).format(**wildcards)
        except KeyError as err:
            raise ValueError(f"product kind {self.name!r} needs wildcard {err.args[0]!r} "
                             f"({self.folder}/{self.template})") from None
        return os.path.join(os.fspath(results_dir), rel)

    def wildcards(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(re.findall(r"{(\w+)}", self.folder + "/" + self.template)))


#: Every product the workflow makes, in data-flow order. Rules declare their
#: outputs with :func:`rule_outputs`, stages and the database find paths with
#: :func:`product_path` and parse them back with :func:`parse_product_path`;
#: nothing else formats a product path.
PRODUCTS: dict[str, ProductKind] = {
    k.name: k
    for k in (
        ProductKind("ms", "ms", "{group}.ms", "convert", "MeasurementSet", directory=True, intermediate=True),
        ProductKind("caltable", "caltables", "{calgroup}", "solve_calibration", "CalTable", directory=True),
        ProductKind("calflux", "calibration", "calibrator_flux.csv", "calibrator_flux", "CalFlux"),
        ProductKind("calibrated", "calibrated", "{group}.ms", "apply_calibration", "CalibratedMS", directory=True,
                    intermediate=True),
        ProductKind("image", "images", "{group}.image.fits", "image", "Image"),
        ProductKind("residual", "images", "{group}.residual.fits", "image"),
        ProductKind("psf", "images", "{group}.psf.fits", "image"),
        ProductKind("pb", "images", "{group}.pb.fits", "image"),
        ProductKind("pbcor", "images", "{group}.pbcor.fits", "image"),
        ProductKind("thumbnail", "images", "{group}.png", "image"),
        ProductKind("photometry", "photometry", "{group}.parquet", "photometry", "Photometry"),
        ProductKind("new_sources", "photometry", "{group}.new_sources.csv", "photometry", "NewSources"),
        # Fan-in products: {name} names the set of light curves ("all").
        ProductKind("lightcurves", "lightcurves", "{name}.parquet", "lightcurves", "LightCurves"),
        ProductKind("lightcurve_epochs", "lightcurves", "{name}.epochs.csv", "lightcurves"),
        ProductKind("variability", "variability", "{name}.parquet", "lightcurves", "Variability"),
        ProductKind("ese_candidates", "variability", "ese_candidates.csv", "lightcurves", "EseCandidates"),
        ProductKind("ese_plot", "variability", "ese_candidates.png", "lightcurves"),
        # New-source candidates of all epochs, grouped by position.
        ProductKind("new_source_summary", "variability", "{name}.new_sources.csv", "lightcurves"),
        # One mosaic: results/mosaics/{tier}/{mosaic}<suffix>.
        ProductKind("mosaic_plan", "mosaics/{tier}", "{mosaic}.plan.json", "plan_mosaic", "MosaicPlan"),
        ProductKind("mosaic", "mosaics/{tier}", "{mosaic}.fits", "build_mosaic", "Mosaic"),
        ProductKind("mosaic_noise", "mosaics/{tier}", "{mosaic}.noise.fits", "build_mosaic"),
        ProductKind("mosaic_weights", "mosaics/{tier}", "{mosaic}.weights.fits", "build_mosaic"),
        ProductKind("mosaic_qa", "mosaics/{tier}", "{mosaic}.qa.png", "qa_mosaic", "MosaicQA"),
        # What became of a mosaic (built, or why not): a workflow record, not registered.
        ProductKind("mosaic_outcome", "mosaics/{tier}", "{mosaic}.outcome.json", "mosaic_outcome"),
    )
}

#: The products of one mosaic, by kind (what ``results/mosaics/{tier}/`` holds).
MOSAIC_PRODUCTS = tuple(k for k, v in PRODUCTS.items() if v.folder == "mosaics/{tier}")

#: Folder of the report's tables and figures (rule summary) under results_dir.
REPORT_FOLDER = "report"


def kind_of(kind: str) -> ProductKind:
    try:
        return PRODUCTS[kind]
    except KeyError:
        raise ValueError(f"unknown product kind {kind!r}; known: {sorted(PRODUCTS)}") from None


def path_of(results_dir: str | os.PathLike, kind: str, **wildcards: str) -> str:
    """Path of one product from its wildcards, e.g. ``path_of(r, "mosaic", tier="deep", mosaic="latest")``."""
    return kind_of(kind).path(results_dir, **wildcards)


def product_path(results_dir: str | os.PathLike, kind: str, ident: str | datetime) -> str:
    """Path of one product named by its one identifying wildcard (a group id, a
    calibrator group, a fan-in name), e.g. ``results/ms/{group}.ms``.

    ``ident`` may be a Snakemake placeholder such as ``"{group}"``.
    """
    spec = kind_of(kind)
    names = spec.wildcards()
    if len(names) > 1:
        raise ValueError(f"product kind {kind!r} needs {names}: use path_of()")
    return spec.path(results_dir, **{n: _group_id(ident) if n in ("group", "calgroup") else str(ident) for n in names})


def rule_outputs(results_dir: str | os.PathLike, rule: str, **wildcards: str) -> dict[str, str]:
    """Every file a rule writes, by kind, plus ``<kind>_sidecar`` for kinds with a sidecar.

    What a rule declares (``output: **naming.rule_outputs(RESULTS, "image", group="{group}")``)
    and what its stage writes are both this dict.
    """
    out: dict[str, str] = {}
    kinds = [k for k in PRODUCTS.values() if k.rule == rule]
    if not kinds:
        raise ValueError(f"no product kind is made by rule {rule!r}")
    for spec in kinds:
        out[spec.name] = spec.path(results_dir, **wildcards)
    for spec in kinds:
        if spec.sidecar:
            out[f"{spec.name}_sidecar"] = sidecar_path(out[spec.name])
    return out


def ms_path(results_dir: str | os.PathLike, group: str | datetime) -> str:
    """The Measurement Set made by rule convert: ``results/ms/{group}.ms``."""
    return product_path(results_dir, "ms", group)


def calflux_path(results_dir: str | os.PathLike) -> str:
    """The calibrator flux monitoring table (one for the whole run)."""
    return path_of(results_dir, "calflux")


def mosaic_path(results_dir: str | os.PathLike, tier: str, name: str, kind: str = "mosaic") -> str:
    """A product of one mosaic, e.g. ``results/mosaics/science/2025-06-15.fits``.

    ``kind`` is one of :data:`MOSAIC_PRODUCTS`. ``tier`` and ``name`` are passed
    through unchecked so that Snakemake placeholders such as ``"{tier}"`` work.
    """
    if kind not in MOSAIC_PRODUCTS:
        raise ValueError(f"unknown mosaic product kind {kind!r}; known: {sorted(MOSAIC_PRODUCTS)}")
    return path_of(results_dir, kind, tier=tier, mosaic=name)


def report_path(results_dir: str | os.PathLike, name: str) -> str:
    """A table or figure of the report (rule summary): ``results/report/<name>``."""
    return os.path.join(os.fspath(results_dir), REPORT_FOLDER, name)


_WILDCARD_PATTERNS = {
    "group": GROUP_PATTERN,
    "calgroup": GROUP_PATTERN,
    "name": r"[A-Za-z0-9][A-Za-z0-9_-]*",
    "tier": "|".join(MOSAIC_TIERS),
    "mosaic": MOSAIC_NAME_PATTERN,
}


def _regex(spec: ProductKind) -> re.Pattern:
    """``folder/template`` of a kind as a regex with one named group per wildcard."""
    text = re.escape(spec.folder + "/" + spec.template)
    for name in spec.wildcards():
        text = text.replace(re.escape("{" + name + "}"), f"(?P<{name}>{_WILDCARD_PATTERNS[name]})", 1)
    return re.compile(r"(?:^|.*/)" + text)


_PRODUCT_RES = [(spec, _regex(spec)) for spec in PRODUCTS.values()]


def parse_product_path(path: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """``(kind, wildcards)`` of a product path (or of its sidecar); inverse of :func:`path_of`.

    Raises ValueError for a path that is no product of this pipeline.
    """
    text = os.fspath(path).replace(os.sep, "/").rstrip("/")
    # A product itself (some are JSON: plans, outcomes), else a sidecar (product + ".json").
    candidates = [text] + ([text[: -len(".json")].rstrip("/")] if text.endswith(".json") else [])
    for candidate in candidates:
        for spec, pattern in _PRODUCT_RES:
            m = pattern.fullmatch(candidate)
            if m:
                return spec.name, m.groupdict()
    raise ValueError(f"{os.fspath(path)!r} is not the path of a product of this pipeline")


def group_of_path(path: str | os.PathLike) -> str | None:
    """The observation group a product's path names, or None.

    A path under results_dir gives its ``{group}`` (or ``{calgroup}``); any
    other file whose name starts with a group id and a dot gives that id.
    """
    try:
        _, wildcards = parse_product_path(path)
    except ValueError:
        wildcards = {}
    group = wildcards.get("group") or wildcards.get("calgroup")
    if group:
        return group
    m = re.match(f"({GROUP_PATTERN})[.]", os.path.basename(os.fspath(path)))
    return m.group(1) if m else None


def product_of_sidecar(sidecar: str | os.PathLike) -> str:
    """The product a sidecar describes: ``<product>.json`` -> ``<product>``."""
    text = os.fspath(sidecar)
    if not text.endswith(".json"):
        raise ValueError(f"{text!r} is not a sidecar (<product>.json)")
    return text[: -len(".json")]


def parse_mosaic_path(path: str | os.PathLike) -> tuple[str, str, str]:
    """``(tier, name, kind)`` of a mosaic product path; inverse of :func:`mosaic_path`."""
    try:
        kind, wc = parse_product_path(path)
    except ValueError:
        kind, wc = None, {}
    if kind not in MOSAIC_PRODUCTS:
        raise ValueError(f"{os.fspath(path)!r} is not a mosaic product under mosaics/<tier>/ "
                         f"(tier one of {MOSAIC_TIERS}, name {MOSAIC_NAME_PATTERN} + a known suffix)")
    return wc["tier"], wc["mosaic"], kind


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

