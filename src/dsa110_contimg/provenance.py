"""Atomic products and their JSON provenance sidecars.

Files are the truth and the database is only an index (DESIGN.md, principle 1).
So every product is written under a temporary sibling name and renamed into
place only once it is complete: a job killed half-way never leaves something
that looks finished. Next to each product sits ``<product>.json``, a sidecar
saying what the product was made from, with which configuration and software,
how long it took and how good it is. The database can always be rebuilt from
the sidecars.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from . import naming, runlock

SCHEMA_VERSION = 1

#: Fields every sidecar has; ``read_sidecar`` refuses a file without them.
REQUIRED_FIELDS = ("schema_version", "kind", "product", "created", "inputs", "status")

#: Distributions whose versions are recorded (looked up, never imported).
SOFTWARE = (
    "dsa110_contimg",
    "numpy",
    "astropy",
    "pyuvdata",
    "h5py",
    "casatools",
    "casatasks",
    "python-casacore",
    "snakemake",
    "sqlalchemy",
)

_RESERVED = frozenset(
    REQUIRED_FIELDS
    + ("group", "workdir", "config_digest", "software", "host", "timings", "qa")
)


class SidecarError(ValueError):
    """A sidecar is missing, is not valid JSON, or lacks required fields."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"sidecar {self.path}: {problem}")


def sidecar_path(product: str | os.PathLike[str]) -> Path:
    """The sidecar of ``product`` (file or directory): ``<product>.json``."""
    return Path(naming.sidecar_path(Path(product)))  # Path() drops a trailing slash


def _remove(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


@contextmanager
def atomic_output(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary sibling of ``final`` to write; rename it into place on success.

    The temporary is ``<parent>/.<name>.tmp-<pid>`` (same file system, so the
    rename is atomic; hidden, so nothing mistakes it for a product); those left
    by attempts whose process is gone are removed first (a live one belongs to
    another attempt and is left alone). The caller creates a file or a
    directory there. On normal exit it replaces ``final``, unless this job's
    workflow run is no longer the current one (:func:`.runlock.ensure_current`
    raises :class:`~.runlock.StaleAttemptError`); an existing ``final`` is
    removed only after the new product is complete. On an exception the
    temporary is removed and ``final`` is left exactly as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    # Leftovers of earlier attempts that were killed (SIGKILL, node failure)
    # cannot clean up after themselves; the next attempt does.
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[1]
        if stale == tmp or not (pid.isdigit() and runlock.pid_alive(int(pid))):
            _remove(stale)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not os.path.lexists(tmp):
        raise FileNotFoundError(f"nothing was written to {tmp} for {final}")
    try:
        runlock.ensure_current(final)
    except runlock.StaleAttemptError:
        _remove(tmp)
        raise
    _replace(tmp, final)



def _replace(tmp: Path, final: Path) -> None:
    """Move ``tmp`` onto ``final``, which may be a file or a directory.

    ``os.replace`` is atomic for a file over a file. A directory cannot be
    renamed over a non-empty directory, so the old product is first renamed
    aside, the new one renamed in, and only then the old one deleted; if the
    second rename fails the old product is put back.
    """
    final_is_dir = final.is_dir() and not final.is_symlink()
    if not os.path.lexists(final) or not (final_is_dir or tmp.is_dir()):
        os.replace(tmp, final)
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    _remove(old)
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        os.replace(old, final)
        raise
    _remove(old)


def config_digest(config: Any) -> str:
    """SHA-256 (hex) of the configuration as canonical JSON: equal configs, equal digests."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def software_versions() -> dict[str, str]:
    """Installed versions of the packages in :data:`SOFTWARE` (absent ones omitted).

    Read from package metadata: importing casatools just to ask its version
    would cost seconds and touch the network set-up.
    """
    versions = {"python": platform.python_version()}
    for name in SOFTWARE:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def to_json(value: Any, where: str = "value") -> Any:
    """Plain-JSON copy of ``value``: numpy scalars/arrays become Python numbers/lists.

    JSON has no NaN or infinity (and PostgreSQL rejects them), so non-finite
    floats become ``null``. Anything else that JSON cannot hold raises
    ``TypeError`` naming where it was found.
    """
    if isinstance(value, np.ndarray | np.generic):
        return to_json(value.tolist(), where)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, _dt.datetime | _dt.date):
        return value.isoformat()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{where}: cannot store {type(value).__name__} in a JSON sidecar")


def write_sidecar(
    product: str | os.PathLike[str],
    *,
    kind: str,
    group: str | None = None,
    inputs: Iterable[str | os.PathLike[str]] = (),
    config: Any = None,
    qa: Mapping[str, Any] | None = None,
    timings: Mapping[str, Any] | None = None,
    status: str = "ok",
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<product>.json`` atomically and return its path.

    ``workdir`` (the current directory) is recorded because ``product`` and
    ``inputs`` are stored as given and are often relative to the workflow's
    working directory.
    """
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "product": os.fspath(product),
        "group": group,
        "created": _dt.datetime.now(_dt.UTC).isoformat(),
        "workdir": os.getcwd(),
        "inputs": [os.fspath(p) for p in inputs],
        "config_digest": None if config is None else config_digest(config),
        "software": software_versions(),
        "host": platform.node(),
        "timings": to_json(dict(timings or {}), "timings"),
        "qa": to_json(dict(qa or {}), "qa"),
        "status": status,
    }
    clash = _RESERVED.intersection(extra or {})
    if clash:
        raise ValueError(f"extra fields would overwrite sidecar fields: {sorted(clash)}")
    record.update(to_json(dict(extra or {}), "extra"))
    path = sidecar_path(product)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a sidecar; :class:`SidecarError` names the file and the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SidecarError(path, "file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarError(path, f"cannot read: {exc}") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SidecarError(path, f"invalid JSON: {exc}") from exc
    return validate_sidecar(record, path)


def validate_sidecar(record: Any, source: str | os.PathLike[str]) -> dict[str, Any]:
    """Check that ``record`` (parsed JSON from ``source``) is a sidecar this code can read."""
    path = Path(source)
    if not isinstance(record, dict):
        raise SidecarError(path, f"expected a JSON object, found {type(record).__name__}")
    missing = [f for f in REQUIRED_FIELDS if f not in record]
    if missing:
        raise SidecarError(path, f"missing required fields {missing}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise SidecarError(
            path, f"schema_version {record['schema_version']!r}, this code reads {SCHEMA_VERSION}"
        )
    return record


__all__ = [
    "REQUIRED_FIELDS",
    "SCHEMA_VERSION",
    "SidecarError",
    "atomic_output",
    "config_digest",
    "read_sidecar",
    "sidecar_path",
    "software_versions",
    "to_json",
    "validate_sidecar",
    "write_sidecar",
]
