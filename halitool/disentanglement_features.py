"""``halitool disentanglement``: read a features file's levels and factors, run the metrics of
:mod:`halitool.disentanglement` per feature set, and shape the result."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from halitool.disentanglement import (
    ACTIVE_VARIANCE, DEFAULT_BINS, DISCRETIZATION, ConstantFactorError, disentanglement_scores,
)
from halitool.errors import BadInputError, UsageError
from halitool.features import FeaturesFile, open_features
from halitool.levels import parse_feature_sets, set_name
from halitool.progress import SILENT, Progress

CLASS_FACTOR = "class"  # the name the class (/labels/class) goes by among the factors


def available_factors(ff: FeaturesFile) -> list[tuple[str, bool]]:
    """``(name, discrete)`` of every factor the file offers: ``/labels/factors``' columns, then the class
    (discrete) where the file has classes. BadInputError when it has neither."""
    factors = list(zip(ff.factor_names, ff.factor_discrete))
    if ff.labels is not None:
        if CLASS_FACTOR in ff.factor_names:
            raise BadInputError(f"{ff.path}: labels/factors has a factor named {CLASS_FACTOR!r}, the name the "
                                "class goes by")
        factors.append((CLASS_FACTOR, True))
    if not factors:
        raise BadInputError(f"{ff.path}: no factors to measure disentanglement against (neither /labels/factors "
                            "nor /labels/class)")
    return factors


def parse_factors(text: str, available: list[str]) -> list[str]:
    """``all`` or a comma list of factor names, checked against ``available`` (a usage error, as a level is)."""
    if text.strip() == "all":
        return list(available)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise UsageError(f"--factors {text!r}: no factor {', '.join(map(repr, unknown)) or 'named'}; the file has "
                         f"{', '.join(available)}")
    if len(set(names)) != len(names):
        raise UsageError(f"--factors {text!r}: names a factor twice")
    return names


def _factor_table(ff: FeaturesFile, names: list[str], rows: np.ndarray) -> np.ndarray:
    """The chosen factors of ``rows`` as float64 columns (the class as its label values)."""
    stored = ff.factors if set(names) - {CLASS_FACTOR} else None  # read (and checked) only when asked for
    columns = [ff.labels[rows].astype(np.float64) if name == CLASS_FACTOR
               else stored[rows, ff.factor_names.index(name)].astype(np.float64) for name in names]
    return np.stack(columns, axis=1)


def disentanglement(path: Path, *, levels: str | None = None, factors: str = "all", bins: int = DEFAULT_BINS,
                    split: str = "test", progress: Progress = SILENT) -> dict:
    """MIG and MIG-sup of each feature set of a features file against its factors, on the rows of ``split``.

    ``levels``: a level spec (``z1,z2,z1+z2``; default each level alone); spatial levels count as their
    flattened dimensions. ``factors``: ``all`` or names among ``/labels/factors``' and ``class``. Each level's
    entry holds its ``mutual_information`` as a float64 array ``[factors, dimensions]`` in nats (the command
    writes it to CSV or a plot and leaves it out of JSON); everything else is plain JSON values.
    """
    started = time.perf_counter()
    if bins < 2:
        raise UsageError(f"--bins must be at least 2, not {bins}")
    with open_features(path) as ff:
        offered = available_factors(ff)
        names = parse_factors(factors, [name for name, _ in offered])
        discrete = [dict(offered)[name] for name in names]
        sets = parse_feature_sets(levels, ff.levels) if levels is not None else [(name,) for name in ff.levels]
        rows = ff.rows(split)
        if len(rows) < 2:
            raise BadInputError(f"{ff.path}: {len(rows)} {split} rows; disentanglement needs at least 2 (the file "
                                f"has {ff.split_counts()}; choose another --split)")
        values = _factor_table(ff, names, rows)
        results = {}
        factor_info = None
        for feature_set in sets:
            with progress.task(f"mutual information of {set_name(feature_set)}", total=None):
                parts = [ff.read_level(name, rows) for name in feature_set]
                latents = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
                try:
                    scores = disentanglement_scores(latents, values, discrete, bins)
                except ConstantFactorError as exc:
                    raise BadInputError(f"{ff.path}: factor {names[exc.index]!r} takes a single value on the "
                                        f"{len(rows):,} {split} rows; leave it out with --factors") from None
            shape = [ff.level_shape(name) for name in feature_set]
            results[set_name(feature_set)] = _level_result(scores, names, latents.shape[1], shape)
            factor_info = [{"name": name, "discrete": d, "entropy": float(h), "codes": int(c)}
                           for name, d, h, c in zip(names, discrete, scores["entropies"], scores["factor_sizes"])]
    return {
        "features": str(path),
        "split": split,
        "rows": int(len(rows)),
        "factors": factor_info,
        "discretization": {"method": DISCRETIZATION, "bins": bins,
                           "latents": "each dimension cut into equal-width bins over its range on these rows",
                           "continuous_factors": "binned as the latents", "discrete_factors": "their values"},
        "units": "nats",
        "active_variance": ACTIVE_VARIANCE,
        "levels": results,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _level_result(scores: dict, names: list[str], dim: int, shapes: list[tuple[int, ...]]) -> dict:
    mig, sup = scores["mig"], scores["mig_sup"]
    per_factor = []
    for k, name in enumerate(names):
        entry = {"name": name, "mig": None, "top_dimension": None, "top_mi": None, "second_dimension": None,
                 "second_mi": None}
        if mig is not None:
            entry.update(mig=float(mig["gaps"][k]), top_dimension=int(mig["top"][k]), top_mi=float(mig["top_mi"][k]),
                         second_dimension=int(mig["second"][k]), second_mi=float(mig["second_mi"][k]))
        per_factor.append(entry)
    return {
        "shape": [list(s) for s in shapes] if len(shapes) > 1 else list(shapes[0]),
        "dimensions": dim,
        "mig": mig["score"] if mig is not None else None,
        "mig_sup": sup["score"] if sup is not None else None,
        "active_dimensions": int(sup["active"].sum()) if sup is not None else None,
        "factors": per_factor,
        "mutual_information": scores["mutual_information"],
    }


def without_matrices(result: dict) -> dict:
    """The result as JSON values only: each level's ``mutual_information`` array left out."""
    levels = {name: {k: v for k, v in level.items() if k != "mutual_information"}
              for name, level in result["levels"].items()}
    return {**result, "levels": levels}
