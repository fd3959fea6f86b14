"""Every setting halitool reads from the environment, read here and nowhere else.

=========================  ==============================================================================
``HALITOOL_DATA``          where data sets, the features cache and the reference classifiers live
                           (default ``$XDG_CACHE_HOME/halitool``, else ``~/.cache/halitool``)
``HALITOOL_CACHE_DIR``     where decoded-image caches live (default ``<data home>/cache``)
``HALITOOL_CACHE``         whether readers cache decoded images: ``on``, ``off`` or ``auto`` (default: data
                           sets of 10,000 images or more)
``HALITOOL_PRETRAINED``    a folder searched for shipped model names before the installed models
``HALITOOL_VERBOSE``       a traceback with errors (as ``-v``)
``NO_COLOR``               no colour on stderr (https://no-color.org)
``WORLD_SIZE``, ``RANK``,  set by ``torchrun``: the processes of a multi-process run
``LOCAL_RANK``
=========================  ==============================================================================

Command options can also come from the environment (``HALITOOL_<COMMAND>_<OPTION>``); that is Click's doing,
configured in :mod:`halitool.cli`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from halitool.errors import UsageError

_SWITCH = {"on": True, "1": True, "true": True, "yes": True, "off": False, "0": False, "false": False,
           "no": False, "auto": None, "": None}


def data_home() -> Path:
    """``$HALITOOL_DATA``, else the user's cache folder (``$XDG_CACHE_HOME/halitool`` or ``~/.cache/halitool``)."""
    if os.environ.get("HALITOOL_DATA"):
        return Path(os.environ["HALITOOL_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "halitool"


def image_cache_dir() -> Path:
    """``$HALITOOL_CACHE_DIR``, else ``data_home()/cache``."""
    if os.environ.get("HALITOOL_CACHE_DIR"):
        return Path(os.environ["HALITOOL_CACHE_DIR"]).expanduser()
    return data_home() / "cache"


def image_cache_switch() -> bool | None:
    """``$HALITOOL_CACHE``: True (on), False (off) or None (auto, the default)."""
    text = os.environ.get("HALITOOL_CACHE", "auto").strip().lower()
    if text not in _SWITCH:
        raise UsageError(f"HALITOOL_CACHE={text!r}: use on, off or auto")
    return _SWITCH[text]


def pretrained_override() -> Path | None:
    """``$HALITOOL_PRETRAINED``: a folder searched for shipped model names first."""
    text = os.environ.get("HALITOOL_PRETRAINED")
    return Path(text).expanduser() if text else None


def verbose() -> bool:
    return os.environ.get("HALITOOL_VERBOSE", "").lower() in ("1", "true", "yes")


def no_color() -> bool:
    return "NO_COLOR" in os.environ


@dataclass(frozen=True)
class Torchrun:
    rank: int
    world: int
    local_rank: int


def torchrun() -> Torchrun:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 outside one)."""
    return Torchrun(rank=int(os.environ.get("RANK", "0")), world=int(os.environ.get("WORLD_SIZE", "1")),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))
