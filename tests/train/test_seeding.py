"""``seed_everything``: deterministic kernels on request, without torch's NaN fill of every new
tensor (a guard that costs time and changes no value: the golden tests pin the values)."""

from __future__ import annotations

import torch

from oodrec.seeding import seed_everything


def test_deterministic_mode_without_the_uninitialised_memory_fill():
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        seed_everything(5, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.utils.deterministic.fill_uninitialized_memory
        a = torch.rand(3)
        seed_everything(5, deterministic=True)
        assert torch.equal(a, torch.rand(3))
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.utils.deterministic.fill_uninitialized_memory = before[2]
