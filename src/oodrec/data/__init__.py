"""Interaction data: the shipped dataset registry, strict file reading and the in-memory dataset.

Bring your own data: raw readers (``raw``), preprocessing (``preprocess``), OOD split protocols
(``splits``), ``prepare_dataset`` / ``dataset_stats``, a simulator with a known ground truth
(``synthetic``) and its scalable version (``synthetic_large``). Published splits load as they are
(``layouts``: pairs, adjacency lists, RecBole benchmark files). The names below are imported
lazily, on first access, so that importing ``oodrec.data`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RawInteractions": "oodrec.data.raw",
    "ColumnMapping": "oodrec.data.raw",
    "read_table": "oodrec.data.raw",
    "read_recbole_inter": "oodrec.data.raw",
    "read_kuairec": "oodrec.data.raw",
    "read_yelp_reviews": "oodrec.data.raw",
    "read_food_com": "oodrec.data.raw",
    "InteractionLog": "oodrec.data.preprocess",
    "PreprocessConfig": "oodrec.data.preprocess",
    "PreprocessReport": "oodrec.data.preprocess",
    "k_core": "oodrec.data.preprocess",
    "preprocess": "oodrec.data.preprocess",
    "SPLITS_PROTOCOLS": "oodrec.data.splits",
    "SPLIT_CONFIGS": "oodrec.data.splits",
    "SplitResult": "oodrec.data.splits",
    "PrepareOptions": "oodrec.data.prepare",
    "RAW_FORMATS": "oodrec.data.prepare",
    "prepare_dataset": "oodrec.data.prepare",
    "dataset_stats": "oodrec.data.stats",
    "SyntheticConfig": "oodrec.data.synthetic",
    "load_synthetic": "oodrec.data.synthetic",
    "LargeSyntheticConfig": "oodrec.data.synthetic_large",
    "generate_large": "oodrec.data.synthetic_large",
    "true_fhn_ratio": "oodrec.data.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'oodrec.data' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
