"""Level specs, the one syntax every command uses to name latent levels.

A *level* is one latent of the hierarchy (``z1``, ``z2``, ...). A *feature set* is one level or several joined
with ``+`` (``z1+z2``: their features concatenated in the order given). A *level spec* is a comma-separated list
of feature sets (``z1,z2,z1+z2``). A name the model or file does not have is a usage error (exit 2) that lists
the levels there are. (A count of levels is called ``n_levels`` everywhere.)
"""

from __future__ import annotations

from typing import Sequence

from halitool.errors import UsageError


def parse_feature_sets(text: str, available: Sequence[str], option: str = "--levels") -> list[tuple[str, ...]]:
    """``"z1,z2,z1+z2"`` -> ``[("z1",), ("z2",), ("z1", "z2")]``, every name checked against ``available``."""
    available = [str(name) for name in available]
    sets = [tuple(part.strip() for part in item.split("+")) for item in text.split(",") if item.strip()]
    if not sets:
        raise UsageError(f"{option} {text!r}: name at least one level (e.g. {_example(available)})")
    unknown = sorted({name for feature_set in sets for name in feature_set if name not in available},
                     key=level_order)
    if unknown:
        raise UsageError(f"{option} {text!r}: no level {', '.join(map(repr, unknown))}; there are "
                         f"{', '.join(available) or 'none'} (sets joined with +, e.g. {_example(available)})")
    repeated = [feature_set for feature_set in sets if len(set(feature_set)) != len(feature_set)]
    if repeated:
        raise UsageError(f"{option} {text!r}: {'+'.join(repeated[0])} names a level twice")
    return sets


def parse_feature_set(text: str, available: Sequence[str], option: str) -> tuple[str, ...]:
    """One feature set (``z2`` or ``z1+z2``): a spec of exactly one item."""
    sets = parse_feature_sets(text, available, option)
    if len(sets) != 1:
        raise UsageError(f"{option} {text!r}: takes one feature set (e.g. {'+'.join(available)}), not a list")
    return sets[0]


def parse_levels(text: str, available: Sequence[str], option: str = "--levels") -> list[str]:
    """A list of single levels (``z1,z2``; no ``+``), returned in the model's order without repeats."""
    sets = parse_feature_sets(text, available, option)
    joined = [s for s in sets if len(s) > 1]
    if joined:
        raise UsageError(f"{option} {text!r}: names levels to store, each alone ({'+'.join(joined[0])} joins them)")
    names = [s[0] for s in sets]
    if len(set(names)) != len(names):
        raise UsageError(f"{option} {text!r}: names a level twice (each at most once)")
    return [name for name in available if name in names]


def set_name(feature_set: Sequence[str]) -> str:
    return "+".join(feature_set)


def _example(available: Sequence[str]) -> str:
    return ",".join([*available, "+".join(available)]) if len(available) > 1 else (available[0] if available else "z1")


def level_order(name: str):
    """Sort key: z1, z2, ..., z10 in chain order, then any other name."""
    return (0, int(name[1:])) if name[:1] == "z" and name[1:].isdigit() else (1, name)
