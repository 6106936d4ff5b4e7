"""The torch device of a run, checked before any work starts."""

from __future__ import annotations

import logging
import shutil
import subprocess

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


logger = logging.getLogger(__name__)

_NVML: list = []  # [pynvml module] once initialised in this process, [None] when unusable


def _nvml():
    """pynvml, initialised once per process, or None (not installed, or no driver)."""
    if not _NVML:
        try:
            import pynvml

            pynvml.nvmlInit()
            _NVML.append(pynvml)
        except Exception:  # noqa: BLE001 - any failure: fall back on nvidia-smi
            _NVML.append(None)
    return _NVML[0]


def cuda_uuid(index: int = 0) -> str | None:
    """The ``GPU-...`` UUID of torch's CUDA device ``index`` (what nvidia-smi and NVML name it,
    whatever ``CUDA_VISIBLE_DEVICES`` remaps), or None where torch does not tell."""
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
    except Exception:  # noqa: BLE001 - older torch, no CUDA
        return None
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


def gpu_utilization(gpu: int | str = 0) -> float | None:
    """Percent of the driver's last sample period (1/6 s to 1 s) in which a kernel ran on the
    GPU ``gpu`` (an nvidia-smi index, counting all GPUs whatever ``CUDA_VISIBLE_DEVICES`` says,
    or a ``GPU-...`` UUID). The whole card's figure: other processes' kernels count too.

    Read through pynvml when it is installed, else ``nvidia-smi --query-gpu=utilization.gpu``;
    None when neither answers (no NVIDIA driver, a CPU-only machine). Never raises.
    """
    nvml = _nvml()
    if nvml is not None:
        try:
            if isinstance(gpu, str) and gpu.startswith("GPU-"):
                handle = nvml.nvmlDeviceGetHandleByUUID(gpu)
            else:
                handle = nvml.nvmlDeviceGetHandleByIndex(int(gpu))
            return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - fall back on nvidia-smi
            pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    cmd = [smi, f"--id={gpu}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True)
        return float(out.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        logger.debug("nvidia-smi gave no utilisation for GPU %s: %s", gpu, exc)
        return None


__all__ = ["check_device", "cuda_uuid", "gpu_utilization"]
