"""Alias of ``oodrec.runs`` for code written against the old path (the run directory layer now
lives below training, in ``oodrec.runs``)."""

from oodrec.runs import LOCK_FILE, RunDir, RunLock, atomic_save, load_checkpoint, load_method_state

__all__ = ["LOCK_FILE", "RunDir", "RunLock", "atomic_save", "load_checkpoint", "load_method_state"]
