"""Load and validate the pipeline configuration.

The JSON schema ``config.schema.yaml`` beside this module is the single source
of truth: it lists every key, its type and its default. Validation fills the
defaults in, so code downstream can index ``cfg["grouping"]["tolerance_s"]``
without guessing, and reports a bad key or value by its dotted path.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import yaml

SCHEMA_FILE = "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


@cache
def _schema_text() -> str:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text()


def schema() -> dict:
    """The configuration schema (a fresh copy, safe to modify)."""
    return yaml.safe_load(_schema_text())


def _with_defaults(validator_class: type) -> type:
    """A validator class that also writes each missing property's default.

    Defaults of nested objects are ``{}`` in the schema, so the inner
    properties are filled in when validation descends into them.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_DefaultingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path)


def _describe(error: jsonschema.ValidationError) -> str:
    """One line per error, led by the dotted key path."""
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        lines = []
        for extra in sorted(set(error.instance) - set(allowed)):
            hint = difflib.get_close_matches(str(extra), allowed, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            lines.append(
                f"config key {_key([*error.absolute_path, extra])!r} is not a known key "
                f"(known here: {', '.join(allowed)}){suggestion}"
            )
        return "; ".join(lines)
    where = _key(error.absolute_path)
    if not where:
        return f"config: {error.message}"
    return f"config key {where!r}: {error.message}"


def validate_config(cfg: Mapping[str, Any]) -> dict:
    """A copy of ``cfg`` with every default filled in, or :class:`ConfigError`.

    The error message lists every problem found, each led by its key path,
    e.g. ``config key 'grouping.incomplete': 'maybe' is not one of ['skip', 'fail']``.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config: expected a mapping of keys to values, got {type(cfg).__name__}")
    filled = copy.deepcopy(dict(cfg))
    validator = _DefaultingValidator(schema())
    errors = sorted(validator.iter_errors(filled), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        raise ConfigError("; ".join(_describe(e) for e in errors))
    problems = path_problems(filled)
    if problems:
        raise ConfigError("; ".join(problems))
    return filled


#: Config keys whose values reach CASA (which copies tables with a shell
#: command) or a subprocess as paths.
PATH_KEYS = (("raw_dir",), ("results_dir",), ("imaging", "wsclean"), ("catalogue", "path"))

#: Characters a path handed to CASA or a subprocess may not contain, and why.
UNSAFE_CHARACTERS = {"'": "a quote", '"': "a quote", "$": "'$'", "`": "a backtick", "\n": "a newline",
                     "\r": "a carriage return", "\x00": "a NUL byte"}  # fmt: skip


def _get(cfg: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if not isinstance(cfg, Mapping) or key not in cfg:
            return None
        cfg = cfg[key]
    return cfg


def path_problems(cfg: Mapping[str, Any]) -> list[str]:
    """Paths and names that must not reach a shell: one message per bad key.

    Paths (:data:`PATH_KEYS`) may not hold :data:`UNSAFE_CHARACTERS` (CASA's
    ``split`` copies subtables through a shell, so a ``results_dir`` holding
    ``'$(...)'`` would run a command). ``calibration.pin`` must be a group id,
    so it names a folder inside ``results_dir/caltables`` and nothing else.
    """
    from .naming import GROUP_PATTERN

    problems = []
    for keys in PATH_KEYS:
        value = _get(cfg, keys)
        if not isinstance(value, str):
            continue
        # A relative path reaches CASA absolute: the working directory counts too.
        full = os.path.abspath(value) if keys[-1].endswith("_dir") else value
        bad = sorted({why for char, why in UNSAFE_CHARACTERS.items() if char in full})
        if bad:
            shown = repr(value) if full == value or any(c in value for c in UNSAFE_CHARACTERS) else (
                f"{value!r} (in working directory {os.getcwd()!r})")
            problems.append(f"config key {_key(keys)!r}: {shown} contains {' and '.join(bad)}, which "
                            "CASA and the shell would interpret; rename the folder")
    pin = _get(cfg, ("calibration", "pin"))
    if isinstance(pin, str) and not re.fullmatch(GROUP_PATTERN, pin):
        problems.append(f"config key 'calibration.pin': {pin!r} is not a calibrator group id "
                        "(YYYY-MM-DDTHH:MM:SS, a folder of results_dir/caltables)")
    return problems


def _merge(base: dict, override: Mapping) -> dict:
    """``base`` updated recursively by ``override`` (mappings merge, the rest replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_config(
    path_or_dict: str | os.PathLike | Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
) -> dict:
    """Read a YAML config file (or take a dict), merge ``overrides``, validate.

    ``overrides`` is a nested mapping merged key by key, as Snakemake does
    with ``--config``.
    """
    if isinstance(path_or_dict, Mapping):
        cfg, source = dict(path_or_dict), None
    else:
        source = os.fspath(path_or_dict)
        try:
            with open(source) as f:
                cfg = yaml.safe_load(f)
        except OSError as err:
            raise ConfigError(f"{source}: cannot read config file ({err.strerror})") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: not valid YAML ({err})".replace("\n", " ")) from None
        cfg = {} if cfg is None else cfg  # an empty file means all defaults
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(cfg).__name__}")
    if overrides:
        cfg = _merge(cfg, overrides)
    try:
        return validate_config(cfg)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}" if source else str(err)) from None



# ------------------------------------------------------- typed option classes


@cache
def _defaults() -> dict:
    return validate_config({})


def default(key: str) -> Any:
    """The schema's default of a dotted key, e.g. ``default("convert.telescope_name")``.

    Option classes take their field defaults from here, so the schema is the
    one place a default is written.
    """
    value: Any = _defaults()
    for part in key.split("."):
        try:
            value = value[part]
        except (KeyError, TypeError):
            raise KeyError(f"the config schema has no default for {key!r}") from None
    return tuple(value) if isinstance(value, list) else copy.deepcopy(value)


def options(cls: type, section: Mapping[str, Any], **overrides: Any):
    """An immutable option object of dataclass ``cls`` from a validated config section.

    Fields of ``cls`` that the section holds are taken from it (lists become
    tuples); the others keep their defaults; ``overrides`` win.
    """
    from dataclasses import fields

    values = {}
    for f in fields(cls):
        if f.init and f.name in section:
            value = section[f.name]
            values[f.name] = tuple(value) if isinstance(value, list) else value
    values.update(overrides)
    return cls(**values)
