"""Data sets: one interface (:class:`Dataset`), readers chosen by SPEC prefix, and fetching."""

from halitool.data.base import READERS, SPLIT_NAMES, SPLITS, Dataset, data_home, default_root, open_dataset, parse_spec
from halitool.data import mnist as _mnist  # noqa: F401  (registers mnist:)
from halitool.data import celeba as _celeba  # noqa: F401  (registers celeba:)
from halitool.data import folder as _folder  # noqa: F401  (registers folder:)

__all__ = ["Dataset", "READERS", "SPLITS", "SPLIT_NAMES", "data_home", "default_root", "open_dataset", "parse_spec"]
