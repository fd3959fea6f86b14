"""Level specs (halitool.levels): the one syntax of --levels and --features, with known answers."""

from __future__ import annotations

import pytest

from halitool.errors import UsageError
from halitool.levels import level_order, parse_feature_set, parse_feature_sets, parse_levels

LEVELS = ["z1", "z2", "z3"]


def test_feature_sets_keep_the_order_given():
    assert parse_feature_sets("z1,z2,z1+z2", LEVELS) == [("z1",), ("z2",), ("z1", "z2")]
    assert parse_feature_sets(" z3+z1 , z2 ", LEVELS) == [("z3", "z1"), ("z2",)]


def test_one_feature_set():
    assert parse_feature_set("z2+z1", LEVELS, "--features") == ("z2", "z1")
    with pytest.raises(UsageError, match="takes one feature set"):
        parse_feature_set("z1,z2", LEVELS, "--features")


def test_levels_are_single_and_stored_in_chain_order():
    assert parse_levels("z3,z1", LEVELS) == ["z1", "z3"]
    with pytest.raises(UsageError, match="each alone"):
        parse_levels("z1+z2", LEVELS)
    with pytest.raises(UsageError, match="twice"):
        parse_levels("z1,z1", LEVELS)


@pytest.mark.parametrize("text, needle", [
    ("z4", "no level 'z4'; there are z1, z2, z3"),
    ("z1,z9+z2", "no level 'z9'"),
    (",", "name at least one level"),
    ("z1+z1", "names a level twice"),
])
def test_bad_specs_are_usage_errors_naming_the_option(text, needle):
    with pytest.raises(UsageError) as info:
        parse_feature_sets(text, LEVELS, "--levels")
    assert needle in str(info.value) and str(info.value).startswith(f"--levels {text!r}")


def test_level_order_sorts_numerically():
    assert sorted(["z10", "z2", "z1", "x"], key=level_order) == ["z1", "z2", "z10", "x"]
