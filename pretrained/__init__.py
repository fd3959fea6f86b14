"""The shipped models (``*.safetensors``) and their model card (README.md); no code.

This file makes pretrained/ a package so that pyproject.toml can install the folder as ``halitool.pretrained``,
the models then being package data of every install (wheel, ``pip install .``, editable). Look models up with
:func:`halitool.checkpoint.resolve_checkpoint` rather than through this package.
"""
