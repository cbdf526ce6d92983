"""Atomic outputs and provenance sidecars, on real files and directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dsa110_contimg.provenance import (
    REQUIRED_FIELDS,
    SidecarError,
    atomic_output,
    config_digest,
    read_sidecar,
    sidecar_path,
    to_json,
    write_sidecar,
)


class Boom(RuntimeError):
    pass


def make_dir_product(path: Path, content: str) -> None:
    """A directory product shaped like a small Measurement Set."""
    (path / "ANTENNA").mkdir(parents=True)
    (path / "table.dat").write_text(content)
    (path / "ANTENNA" / "table.dat").write_text(content)


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_sidecar_path_for_files_and_directories():
    assert sidecar_path("results/ms/2025-06-15T08:00:03.ms") == Path(
        "results/ms/2025-06-15T08:00:03.ms.json"
    )
    assert sidecar_path("results/ms/2025-06-15T08:00:03.ms/") == Path(
        "results/ms/2025-06-15T08:00:03.ms.json"
    )
    assert sidecar_path(Path("/a/b.image.fits")) == Path("/a/b.image.fits.json")


def test_atomic_file_appears_only_when_complete(tmp_path):
    final = tmp_path / "sub" / "out.txt"
    with atomic_output(final) as tmp:
        assert tmp == tmp_path / "sub" / f".out.txt.tmp-{os.getpid()}"
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    assert leftovers(final.parent) == []


def test_atomic_file_replaces_existing(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with atomic_output(final) as tmp:
        tmp.write_text("new")
        assert final.read_text() == "old"
    assert final.read_text() == "new"


def test_atomic_file_failure_keeps_old_product(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(Boom), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise Boom
    assert final.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_directory_success_replaces_old_tree(tmp_path):
    final = tmp_path / "x.ms"
    make_dir_product(final, "old")
    (final / "stale_only_in_old").write_text("x")
    with atomic_output(final) as tmp:
        make_dir_product(tmp, "new")
        assert (final / "table.dat").read_text() == "old"
    assert (final / "ANTENNA" / "table.dat").read_text() == "new"
    assert not (final / "stale_only_in_old").exists()
    assert leftovers(tmp_path) == []


def test_atomic_directory_failure_keeps_old_tree(tmp_path):
    final = tmp_path / "x.ms"
    make_dir_product(final, "old")
    with pytest.raises(Boom), atomic_output(final) as tmp:
        make_dir_product(tmp, "half")
        raise Boom
    assert (final / "ANTENNA" / "table.dat").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_new_directory_failure_leaves_nothing(tmp_path):
    final = tmp_path / "x.ms"
    with pytest.raises(Boom), atomic_output(final) as tmp:
        make_dir_product(tmp, "half")
        raise Boom
    assert list(tmp_path.iterdir()) == []


def test_atomic_removes_stale_temporary_first(tmp_path):
    final = tmp_path / "x.ms"
    stale = tmp_path / f".x.ms.tmp-{os.getpid()}"
    make_dir_product(stale, "stale from a killed run")
    with atomic_output(final) as tmp:
        assert not tmp.exists()
        make_dir_product(tmp, "new")
    assert (final / "table.dat").read_text() == "new"


def test_atomic_nothing_written_is_an_error(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_output(final):
        pass
    assert final.read_text() == "old"


def test_atomic_directory_replaces_file(tmp_path):
    final = tmp_path / "x.ms"
    final.write_text("a file where a directory belongs")
    with atomic_output(final) as tmp:
        make_dir_product(tmp, "new")
    assert (final / "table.dat").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_sidecar_round_trip_with_numpy_qa(tmp_path):
    product = tmp_path / "2025-06-15T08:00:03.ms"
    make_dir_product(product, "ms")
    config = {"b": 2, "a": {"c": [1, 2]}, "path": tmp_path}
    qa = {
        "n_rows": np.int64(110784),
        "flagged_fraction": np.float32(0.25),
        "channels": np.arange(3),
        "ok": np.bool_(True),
        "rms": float("nan"),
        "time_start": "2025-06-15T08:00:03",
    }
    path = write_sidecar(
        product,
        kind="ms",
        group="2025-06-15T08:00:03",
        inputs=[tmp_path / "2025-06-15T08:00:03_sb00.hdf5"],
        config=config,
        qa=qa,
        timings={"convert_s": np.float64(12.5)},
        extra={"phase_centre": {"ra_deg": 10.0}},
    )
    assert path == sidecar_path(product)
    record = read_sidecar(path)
    assert json.loads(path.read_text()) == record  # plain JSON, no NaN tokens
    assert set(REQUIRED_FIELDS) <= set(record)
    assert record["schema_version"] == 1
    assert record["kind"] == "ms"
    assert record["product"] == str(product)
    assert record["group"] == "2025-06-15T08:00:03"
    assert record["inputs"] == [str(tmp_path / "2025-06-15T08:00:03_sb00.hdf5")]
    assert record["config_digest"] == config_digest(config)
    assert record["qa"] == {
        "n_rows": 110784,
        "flagged_fraction": 0.25,
        "channels": [0, 1, 2],
        "ok": True,
        "rms": None,
        "time_start": "2025-06-15T08:00:03",
    }
    assert record["timings"] == {"convert_s": 12.5}
    assert record["status"] == "ok"
    assert record["phase_centre"] == {"ra_deg": 10.0}
    assert record["created"].endswith("+00:00")
    assert record["workdir"] == os.getcwd()
    assert record["host"]
    assert record["software"]["numpy"] == np.__version__
    assert record["software"]["sqlalchemy"]
    assert "not-a-package" not in record["software"]
    assert leftovers(tmp_path) == []


def test_write_sidecar_imports_no_heavy_package(tmp_path):
    """Versions come from package metadata; importing casatools would cost seconds."""
    code = (
        "import sys; from dsa110_contimg.provenance import write_sidecar; "
        f"write_sidecar({str(tmp_path / 'p')!r}, kind='ms'); "
        "heavy = {'casatools', 'casatasks', 'pyuvdata', 'astropy', 'snakemake', 'sqlalchemy'}; "
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    assert read_sidecar(tmp_path / "p.json")["config_digest"] is None


def test_extra_may_not_overwrite_fields(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        write_sidecar(tmp_path / "p", kind="ms", extra={"kind": "image"})
    assert not (tmp_path / "p.json").exists()


def test_unserialisable_qa_is_named(tmp_path):
    with pytest.raises(TypeError, match=r"qa\.beam"):
        write_sidecar(tmp_path / "p", kind="ms", qa={"beam": object()})


def test_config_digest_is_canonical():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})
    assert len(config_digest({})) == 64


def test_to_json_nested():
    assert to_json({"a": (np.float64(1.5), [np.int32(2)])}) == {"a": [1.5, [2]]}
    assert to_json(np.array([[1.0, np.inf]])) == [[1.0, None]]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"kind": "ms"}', "missing required fields"),
    ],
)
def test_bad_sidecar_errors_name_the_file(tmp_path, content, problem):
    path = tmp_path / "x.ms.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SidecarError, match=problem) as info:
        read_sidecar(path)
    assert str(path) in str(info.value)
    assert info.value.path == path


def test_newer_schema_is_refused(tmp_path):
    path = write_sidecar(tmp_path / "p", kind="ms")
    record = json.loads(path.read_text())
    record["schema_version"] = 2
    path.write_text(json.dumps(record))
    with pytest.raises(SidecarError, match="schema_version 2"):
        read_sidecar(path)


def test_leftovers_of_killed_attempts_are_removed_by_the_next(tmp_path):
    final = tmp_path / "x.ms"
    stale = tmp_path / ".x.ms.tmp-999999"  # another process id, killed mid-write
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "data").write_bytes(b"partial")
    other = tmp_path / ".x.ms.json.tmp-999999"  # a different product's temporary
    other.write_text("{}")
    with atomic_output(final) as tmp:
        tmp.mkdir()
        (tmp / "table.dat").write_text("complete")
    assert not stale.exists() and other.exists()
    assert (final / "table.dat").read_text() == "complete"
