"""Configuration: the schema's defaults fill in, bad keys and values are named."""

from __future__ import annotations

import os

import pytest
import yaml

from dsa110_contimg.config import ConfigError, load_config, schema, validate_config


def test_empty_config_gets_every_default():
    cfg = validate_config({})
    assert set(cfg) == set(schema()["properties"]), "every top-level section is filled in"
    expected = {
        "raw_dir": "raw",
        "results_dir": "results",
        "database": {"url": None},
        "grouping": {"tolerance_s": 60, "n_subbands": 16, "incomplete": "skip"},
        "convert": {"telescope_name": "OVRO-LWA", "flag_autocorrelations": True},
    }
    assert {k: cfg[k] for k in expected} == expected
    assert cfg["resources"]["convert"] == {"threads": 1, "mem_mb": 4000, "runtime": 30}
    assert set(cfg["resources"]) == set(schema()["properties"]["resources"]["properties"])


def test_partial_sections_are_completed_and_input_is_not_modified():
    given = {"grouping": {"incomplete": "fail"}, "resources": {"convert": {"mem_mb": 8000}}}
    cfg = validate_config(given)
    assert cfg["grouping"] == {"tolerance_s": 60, "n_subbands": 16, "incomplete": "fail"}
    assert cfg["resources"]["convert"] == {"threads": 1, "mem_mb": 8000, "runtime": 30}
    assert given == {"grouping": {"incomplete": "fail"}, "resources": {"convert": {"mem_mb": 8000}}}


def test_bad_value_is_named_by_key_path():
    with pytest.raises(ConfigError) as err:
        validate_config({"grouping": {"incomplete": "maybe"}})
    assert str(err.value) == "config key 'grouping.incomplete': 'maybe' is not one of ['skip', 'fail']"


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'resources\.convert\.mem_mb': 'lots' is not of type 'integer'"):
        validate_config({"resources": {"convert": {"mem_mb": "lots"}}})


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        validate_config({"grouping": {"tolerence_s": 30}})
    message = str(err.value)
    assert "'grouping.tolerence_s'" in message
    assert "did you mean 'tolerance_s'" in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        validate_config({"raw_dirr": "x", "grouping": {"n_subbands": 0}})
    assert "'raw_dirr'" in str(err.value) and "'grouping.n_subbands'" in str(err.value)


def test_not_a_mapping():
    with pytest.raises(ConfigError, match="mapping"):
        validate_config(["raw_dir"])


def test_every_schema_object_refuses_unknown_keys():
    def walk(node, where="config"):
        if node.get("type") == "object":
            # Fixed keys refuse others; a map (run.hold) constrains its keys' form instead.
            assert node.get("additionalProperties") is False or "pattern" in node.get("propertyNames", {}), where
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{where}.{key}")

    walk(schema())
    with pytest.raises(ConfigError, match="hold"):
        validate_config({"run": {"hold": {"yesterday": "convert failed"}}})


def test_load_config_from_file_with_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"raw_dir": "in", "grouping": {"tolerance_s": 30}}))
    cfg = load_config(path, overrides={"grouping": {"incomplete": "fail"}, "results_dir": "out"})
    assert (cfg["raw_dir"], cfg["results_dir"]) == ("in", "out")
    assert cfg["grouping"] == {"tolerance_s": 30, "n_subbands": 16, "incomplete": "fail"}


def test_load_config_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("grouping:\n  incomplete: maybe\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "'grouping.incomplete'" in str(err.value)


def test_load_config_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(empty) == validate_config({})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(scalar)


def test_shipped_configs_are_valid(repo_root):
    for name in ("config.yaml", "demo.yaml"):
        load_config(repo_root / "config" / name)


def test_config_schema_link_points_at_the_package_schema(repo_root):
    link = repo_root / "config" / "schema.yaml"
    assert link.is_symlink()
    assert os.path.samefile(link, repo_root / "src" / "dsa110_contimg" / "config.schema.yaml")
