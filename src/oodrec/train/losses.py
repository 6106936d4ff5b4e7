"""Alias of ``oodrec.models.losses`` for code written against the old path (losses live beside
the models)."""

from oodrec.models.losses import bpr_loss, l2_loss

__all__ = ["bpr_loss", "l2_loss"]
