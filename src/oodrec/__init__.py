"""oodrec: recommenders under distribution shift.

LightGCN with pluggable negative samplers (uniform, CNSDiff, ...), the methods of the CNSDiff
paper's comparison, the OOD splits and full-ranking evaluation on ``val``, ``iid_test`` and
``ood_test``; and, for a trained run, its recommendations in the user's own ids.

The Python API (``oodrec.api``)::

    import oodrec

    run = oodrec.train(dataset="synthetic", sampler="rns", seed=1, epochs=5)
    run = oodrec.load_run("runs/synthetic-rns-seed1")
    run.recommend(["3", "17"], k=10)
    oodrec.load_dataset("food")

Importing this package does no I/O, seeds nothing, parses no arguments and does not import
torch: the API's names load on first use.
"""

import sys as _sys
import types as _types
from typing import Any

import oodrec.train as _train_package
from oodrec._version import __version__

_API = ("Run", "load_dataset", "load_run")


class _TrainPackage(_types.ModuleType):
    """``oodrec.train`` is the training package and the API's ``train`` function at once:
    calling the package calls ``oodrec.api.train`` (see its docstring for the arguments)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from oodrec.api import train

        return train(*args, **kwargs)


_sys.modules["oodrec.train"].__class__ = _TrainPackage
train = _train_package


def __getattr__(name: str) -> Any:
    if name in _API:
        from oodrec import api

        return getattr(api, name)
    raise AttributeError(f"module 'oodrec' has no attribute {name!r}")


__all__ = ["Run", "__version__", "load_dataset", "load_run", "train"]
