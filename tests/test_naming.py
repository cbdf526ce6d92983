"""Product and raw-file names: build, parse back, reject what is malformed."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dsa110_contimg import naming


def test_timestamp_round_trip_in_utc():
    dt = datetime(2025, 6, 15, 8, 0, 3, tzinfo=UTC)
    assert naming.format_timestamp(dt) == "2025-06-15T08:00:03"
    assert naming.parse_timestamp("2025-06-15T08:00:03") == dt


def test_naive_times_are_utc_and_aware_times_are_converted():
    assert naming.format_timestamp(datetime(2025, 6, 15, 8, 0, 3)) == "2025-06-15T08:00:03"
    pacific = timezone(timedelta(hours=-7))
    assert naming.format_timestamp(datetime(2025, 6, 15, 1, 0, 3, tzinfo=pacific)) == "2025-06-15T08:00:03"


def test_fraction_of_a_second_is_dropped_not_rounded():
    assert naming.format_timestamp(datetime(2025, 6, 15, 8, 0, 3, 999_999)) == "2025-06-15T08:00:03"


@pytest.mark.parametrize("text", ["2025-06-15 08:00:03", "2025-06-15T08:00", "2025-06-15T08:00:03Z", "x"])
def test_parse_timestamp_rejects_other_forms(text):
    with pytest.raises(ValueError):
        naming.parse_timestamp(text)


def test_group_pattern_matches_exactly_a_timestamp():
    assert re.fullmatch(naming.GROUP_PATTERN, "2025-06-15T08:00:03")
    assert not re.fullmatch(naming.GROUP_PATTERN, "2025-06-15T08:00:03_sb00")
    assert not re.fullmatch(naming.GROUP_PATTERN, "calibrated")


def test_raw_filename_and_back():
    dt = datetime(2025, 6, 15, 8, 0, 3, tzinfo=UTC)
    name = naming.raw_filename(dt, 7)
    assert name == "2025-06-15T08:00:03_sb07.hdf5"
    assert naming.parse_raw_filename(name) == (dt, 7)
    assert naming.parse_raw_filename(f"/data/raw/{name}") == (dt, 7)
    assert naming.is_raw_name(name)


def test_raw_filename_rejects_subband_out_of_range():
    with pytest.raises(ValueError):
        naming.raw_filename(datetime(2025, 6, 15), 16)


@pytest.mark.parametrize(
    "name, why",
    [
        ("2025-13-01T00:00:00_sb00.hdf5", "month"),
        ("2025-02-29T00:00:00_sb00.hdf5", "day"),
        ("2025-06-15T24:00:00_sb00.hdf5", "hour"),
        ("2025-06-15T08:00:03_sb16.hdf5", "subband 16"),
        ("2025-06-15T08:00:03_sb1.hdf5", "YYYY-MM-DDTHH:MM:SS_sbNN"),
        ("2025-06-15T08:00:03.hdf5", "YYYY-MM-DDTHH:MM:SS_sbNN"),
    ],
)
def test_malformed_raw_names_raise_naming_the_file(name, why):
    with pytest.raises(naming.RawNameError) as err:
        naming.parse_raw_filename(name)
    assert name in str(err.value)
    assert why in str(err.value)
    assert isinstance(err.value, ValueError)
    assert naming.looks_like_raw(name)
    assert not naming.is_raw_name(name)


@pytest.mark.parametrize("name", ["notes.txt", ".DS_Store", "2025-06-15T08:00:03_sb00.hdf5.part", "README"])
def test_other_files_do_not_look_like_observations(name):
    assert not naming.looks_like_raw(name)
    assert not naming.is_raw_name(name)


def test_leap_day_of_a_leap_year_is_valid():
    assert naming.parse_raw_filename("2024-02-29T23:59:59_sb15.hdf5")[1] == 15


def test_classify_agrees_with_parse_raw_filename():
    """The vectorised parser must give exactly the single-name parser's answers."""
    rng = random.Random(3)
    names = ["notes.txt", ".DS_Store", "2025-06-15T08:00:03_sb0é.hdf5", "日本語.hdf5", "sub/2025-06-15T08:00:03_sb02.hdf5"]
    for _ in range(3000):
        y, mo, d = rng.choice([2024, 2025, 1999]), rng.randint(0, 13), rng.randint(0, 32)
        h, mi, s, sb = rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 61), rng.randint(0, 17)
        names.append(f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}_sb{sb:02d}.hdf5")
    listing = naming.classify_raw_names(names)
    assert listing.ignored == ["notes.txt", ".DS_Store", "日本語.hdf5"]
    assert len(listing.names) + len(listing.invalid) + len(listing.ignored) == len(names)
    for name, seconds, subband in zip(listing.names, listing.seconds, listing.subbands):
        dt, sb = naming.parse_raw_filename(name)
        assert (int(dt.timestamp()), sb) == (seconds, subband)
    for name, reason in listing.invalid.items():
        assert not naming.is_raw_name(name)
        assert name in reason
    assert len(listing.names) > 100 and len(listing.invalid) > 100  # both branches exercised


def test_format_epoch_seconds_matches_format_timestamp():
    dt = datetime(2025, 6, 15, 8, 0, 3, tzinfo=UTC)
    assert naming.format_epoch_seconds([int(dt.timestamp())]) == [naming.format_timestamp(dt)]


def test_product_paths():
    assert naming.ms_path("results", "2025-06-15T08:00:03") == "results/ms/2025-06-15T08:00:03.ms"
    assert naming.ms_path("results", datetime(2025, 6, 15, 8, 0, 3)) == "results/ms/2025-06-15T08:00:03.ms"
    assert naming.ms_path("results", "{group}") == "results/ms/{group}.ms"  # Snakemake wildcard
    assert naming.product_path("/r", "ms", "2025-06-15T08:00:03") == "/r/ms/2025-06-15T08:00:03.ms"
    assert naming.sidecar_path("results/ms/x.ms") == "results/ms/x.ms.json"
    assert naming.log_path("results", "convert", "{group}") == "results/logs/convert/{group}.log"
    assert naming.benchmark_path("results", "convert", "{group}") == "results/benchmarks/convert/{group}.tsv"
    assert naming.database_path("results") == "results/products.sqlite"


def test_unknown_product_kind_is_named():
    with pytest.raises(ValueError, match="'mosaic'"):
        naming.product_path("results", "mosaic", "2025-06-15T08:00:03")


# ------------------------------------------------------------ the product registry

WILDCARDS = {"group": "2025-06-15T08:00:03", "calgroup": "2025-06-15T07:55:12", "name": "all",
             "tier": "science", "mosaic": "2025-06-15"}


@pytest.mark.parametrize("kind", sorted(naming.PRODUCTS))
def test_every_product_path_parses_back_to_its_kind_and_wildcards(kind):
    spec = naming.PRODUCTS[kind]
    wildcards = {w: WILDCARDS[w] for w in spec.wildcards()}
    path = naming.path_of("/data/results", kind, **wildcards)
    assert naming.parse_product_path(path) == (kind, wildcards)
    assert naming.parse_product_path(naming.sidecar_path(path)) == (kind, wildcards)
    if "group" in wildcards or "calgroup" in wildcards:
        assert naming.group_of_path(path) == wildcards.get("group", wildcards.get("calgroup"))


def test_rule_outputs_cover_every_kind_once_with_sidecars_of_registered_kinds():
    rules = {spec.rule for spec in naming.PRODUCTS.values()}
    seen = []
    for rule in rules:
        kinds = [k for k in naming.PRODUCTS if naming.PRODUCTS[k].rule == rule]
        wildcards = {w: "{" + w + "}" for k in kinds for w in naming.PRODUCTS[k].wildcards()}
        outputs = naming.rule_outputs("results", rule, **wildcards)
        seen += [k for k in outputs if not k.endswith("_sidecar")]
        assert {k[: -len("_sidecar")] for k in outputs if k.endswith("_sidecar")} == {
            k for k in kinds if naming.PRODUCTS[k].sidecar}
    assert sorted(seen) == sorted(naming.PRODUCTS)


def test_the_database_registers_exactly_the_kinds_with_a_sidecar():
    from dsa110_contimg.db import KINDS

    with_sidecar = {k for k, spec in naming.PRODUCTS.items() if spec.sidecar}
    assert set(KINDS) == with_sidecar
    for kind in with_sidecar:
        assert KINDS[kind].model.__name__ == naming.PRODUCTS[kind].model


def test_paths_that_are_no_product_are_refused():
    for path in ("results/images/notes.txt", "results/images/2025-06-15T08:00:03.fits",
                 "results/mosaics/weekly/2025-06-15.fits", "results/ms/2025-06-15T08-00-03.ms"):
        with pytest.raises(ValueError, match="not the path of a product"):
            naming.parse_product_path(path)
