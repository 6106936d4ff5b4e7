"""oodrec: recommenders under distribution shift.

LightGCN with pluggable negative samplers (uniform, CNSDiff, ...), the OOD splits of the CNSDiff
paper and full-ranking evaluation on ``val``, ``iid_test`` and ``ood_test``.

Importing this package does no I/O, seeds nothing and parses no arguments.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
