"""Small shared helpers: device resolution, seeding, memory guards."""

from __future__ import annotations

import random

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; ``"cuda"`` without a GPU is an error (no silent fallback)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but no CUDA device is available")
    if not (str(device) == "cpu" or str(device).startswith("cuda")):
        raise ValueError(f"device: expected 'auto', 'cpu' or 'cuda[:i]', got {device!r}")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries that use the global numpy RNG
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def available_memory(device: torch.device) -> int:
    """Bytes that one allocation can reasonably take on ``device`` (free GPU memory, or available host RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


class MemoryEstimateError(MemoryError):
    """Raised before an allocation that cannot fit; the message names the option to change."""


def check_memory(nbytes: float, device: torch.device, what: str, option: str, fraction: float = 0.8) -> None:
    """Stop with a clear message if ``nbytes`` exceeds ``fraction`` of what ``device`` has available.

    Args:
        nbytes: estimated bytes the step needs.
        what: the step, e.g. "empirical NTK Gram matrix (N*C × M*C float64)".
        option: the option that reduces it, e.g. "block_size" or "subset='last_layer'".
    """
    avail = available_memory(device)
    if nbytes > fraction * avail:
        raise MemoryEstimateError(
            f"{what} needs about {nbytes / 2**30:.2f} GiB but {device} has {avail / 2**30:.2f} GiB available; "
            f"reduce it with {option}"
        )
