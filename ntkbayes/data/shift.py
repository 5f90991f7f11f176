"""Distribution shift at five severities, offline: Ovadia et al. (2019), "Can you trust your model's uncertainty?
Evaluating predictive uncertainty under dataset shift" — accuracy, NLL and ECE as the test inputs are corrupted.

``shifted(data, kind, severity, seed)`` returns corrupted copies of a split's inputs (default: test), in the
standardized space the methods see. Parameters per severity (``SEVERITY_PARAMS``):

============== ======================================== ====== ====== ====== ====== ======
kind           parameter                                 1      2      3      4      5
============== ======================================== ====== ====== ====== ====== ======
gaussian_noise noise std, in units of the train std      0.1    0.25   0.5    0.75   1.0
rotation       angle in degrees, sign random per input   15     30     45     60     90
shift          positions, sign random; edge value fills  2      4      6      8      10
roll           positions, sign random; circular          4      8      12     16     20
============== ======================================== ====== ====== ====== ====== ======

``gaussian_noise`` applies to every dataset (features are standardized, so the std is relative to the training
spread). ``rotation`` applies to images — digits (8×8, flattened by default) and the vision datasets — loaded
with ``standardize="channel"`` or ``"none"``: the image is rotated about its centre (bilinear), and the corners
are filled with the standardized value of a black pixel, so it equals rotating the raw image and standardizing
after (per-feature standardization does not commute with rotation and is refused). ``shift`` and ``roll``
translate mnist1d sequences along their 40 positions; mnist1d's generator already applies random circular
translations, so ``roll`` probes that invariance while ``shift`` also cuts off part of the signal. Severity 0
returns an unchanged copy (the clean reference). Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import math
from enum import Enum

import torch
import torch.nn.functional as F

from ntkbayes.data.splits import DatasetSplits


class ShiftKind(str, Enum):
    """Kinds of corruption; see the module table for the parameter of each severity."""

    GAUSSIAN_NOISE = "gaussian_noise"
    """Additive iid Gaussian noise, std in units of the training std; any dataset."""
    ROTATION = "rotation"
    """Rotation of images about their centre by a fixed angle with a random sign per image."""
    SHIFT = "shift"
    """Translation of sequences by a fixed number of positions (random direction); the edge value fills in."""
    ROLL = "roll"
    """Circular translation of sequences by a fixed number of positions (random direction)."""


SEVERITIES = (1, 2, 3, 4, 5)
# Severity 1..5 parameters (module table). Rotations stop at 90° so that a 6 and a 9 are never swapped; noise
# reaches the training std at severity 5; mnist1d sequences are 40 long, so a shift of 10 loses a quarter.
SEVERITY_PARAMS: dict[ShiftKind, tuple[float, ...]] = {
    ShiftKind.GAUSSIAN_NOISE: (0.1, 0.25, 0.5, 0.75, 1.0),
    ShiftKind.ROTATION: (15.0, 30.0, 45.0, 60.0, 90.0),
    ShiftKind.SHIFT: (2, 4, 6, 8, 10),
    ShiftKind.ROLL: (4, 8, 12, 16, 20),
}


def rotate_images(images: torch.Tensor, degrees: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate square images (N, C, H, W) about their centres by ``degrees`` (N,), bilinear; pixels from outside the
    image take ``fill`` (C,) (default 0). Returns (N, C, H, W)."""
    n, c = images.shape[:2]
    rad = degrees.to(torch.float64) * (math.pi / 180)
    cos, sin, zero = torch.cos(rad), torch.sin(rad), torch.zeros_like(rad)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    fill = torch.zeros(c, dtype=images.dtype) if fill is None else fill.to(images.dtype)
    fill = fill.reshape(1, c, 1, 1)
    out = F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + fill


def _image_shape(data: DatasetSplits, x: torch.Tensor, image_shape) -> tuple[int, ...]:
    if image_shape is None:
        image_shape = tuple(x.shape[1:]) if x.ndim == 4 else data.info.get("image_shape")
    if image_shape is None or len(image_shape) != 3 or math.prod(image_shape) != math.prod(x.shape[1:]):
        raise ValueError(
            f"dataset {data.name!r}: rotation needs images; pass image_shape=(C, H, W) matching inputs of shape "
            f"{tuple(x.shape[1:])} (got {image_shape!r})"
        )
    if image_shape[1] != image_shape[2]:
        raise ValueError(f"dataset {data.name!r}: rotation needs square images, got image_shape {image_shape}")
    return tuple(int(s) for s in image_shape)


def _black_fill(data: DatasetSplits, channels: int) -> torch.Tensor:
    """Standardized value (C,) of a raw 0 pixel, from the preprocessing recorded by the loader."""
    prep = data.info.get("preprocessing", {})
    mode = prep.get("standardize", "none")
    if mode in ("none", False):
        return torch.zeros(channels)
    if mode == "channel" and len(prep.get("mean", ())) == channels:
        return -torch.tensor(prep["mean"]) / torch.tensor(prep["std"])
    raise ValueError(
        f"dataset {data.name!r}: rotation needs inputs standardized per channel or not at all "
        f"(preprocessing {mode!r}); load it with standardize='channel'"
    )


def shifted(
    data: DatasetSplits,
    kind: ShiftKind | str,
    severity: int,
    seed: int,
    image_shape: tuple[int, int, int] | None = None,
    *,
    split: str = "test",
) -> torch.Tensor:
    """Corrupted copy of ``data.<split>.x`` (N, ...) at ``severity`` 0..5; returns a tensor of the same shape.

    Args:
        data: loaded dataset (its ``info`` gives the image shape and the standardization for rotations).
        kind: a :class:`ShiftKind` or its string.
        severity: 1..5 (module table); 0 returns an unchanged copy.
        seed: seeds the noise and the per-input signs; same seed, same output.
        image_shape: (C, H, W) of flattened images when ``data.info`` does not record it.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """
    try:
        kind = ShiftKind(kind)
    except ValueError:
        raise ValueError(f"unknown shift kind {kind!r}; one of {', '.join(k.value for k in ShiftKind)}") from None
    if isinstance(severity, bool) or not isinstance(severity, int) or not 0 <= severity <= len(SEVERITIES):
        raise ValueError(f"shift severity must be an int in 0..{len(SEVERITIES)}, got {severity!r}")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    x = getattr(data, split).x
    if severity == 0:
        return x.clone()
    param = SEVERITY_PARAMS[kind][severity - 1]
    gen = torch.Generator().manual_seed(int(seed))
    n = x.shape[0]
    if kind is ShiftKind.GAUSSIAN_NOISE:
        return x + param * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    signs = torch.randint(0, 2, (n,), generator=gen) * 2 - 1  # (N,) ±1
    if kind is ShiftKind.ROTATION:
        shape = _image_shape(data, x, image_shape)
        fill = _black_fill(data, shape[0])
        out = rotate_images(x.reshape(n, *shape), signs * float(param), fill)
        return out.reshape(x.shape)
    modality = data.info.get("modality")
    if x.ndim != 2 or modality not in (None, "sequence"):
        raise ValueError(
            f"dataset {data.name!r}: shift kind {kind.value!r} needs sequences (N, D), e.g. mnist1d; got "
            f"{modality or 'inputs'} of shape {tuple(x.shape)}"
        )
    d = x.shape[1]
    idx = torch.arange(d).unsqueeze(0) - (signs * int(param)).unsqueeze(1)  # out[:, i] = x[:, i - offset]
    idx = idx % d if kind is ShiftKind.ROLL else idx.clamp(0, d - 1)
    return x.gather(1, idx)
