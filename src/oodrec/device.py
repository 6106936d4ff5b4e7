"""The torch device of a run, checked before any work starts."""

from __future__ import annotations

import torch

from oodrec.errors import ConfigError


def check_device(name: str) -> torch.device:
    """The torch device ``name``, checked before any work starts.

    Raises:
        ConfigError: not a device name, or a CUDA / MPS device this machine or torch build lacks.
    """
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"train.device {name!r} is not a torch device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            built = torch.version.cuda or "no CUDA"
            raise ConfigError(
                f"train.device={name}: CUDA is not available here (torch {torch.__version__}, "
                f"built with {built}); use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device={name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"train.device={name}: MPS is not available here; use --device cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"train.device={name}: use cpu, cuda, cuda:N or mps")
    return dev


__all__ = ["check_device"]
