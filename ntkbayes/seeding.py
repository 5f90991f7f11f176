"""The one seed-derivation function: independent, reproducible random streams from one run seed.

A cell has one integer seed (its data split and its initialization). Every random stream a method needs — member
k's initialization, its minibatch order, dropout masks, prior draws, posterior samples — gets its own seed
``derive_seed(seed, "purpose", k, ...)``, so streams never collide (unlike ``seed·1000 + k``, where seed 1's
member 0 meets seed 0's member 1000) and adding a stream changes no other. The value depends only on the words,
not on the platform, the Python version or the process (blake2b of their canonical text, not ``hash()``).
"""

from __future__ import annotations

import hashlib

import torch

#: Seeds are 63-bit: they fit a signed int64 (``torch.Generator.manual_seed``, numpy, JSON readers).
SEED_BITS = 63


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed for the stream named by ``keys`` under ``seed``; deterministic across runs and platforms.

    Args:
        seed: the run's seed (any int, negative allowed). keys: ints and strings naming the stream, e.g.
            ``("init", k)`` for member k's initialization. ``derive_seed(s, 1)`` and ``derive_seed(s, "1")`` differ.
    Returns:
        int in [0, 2⁶³).
    """
    words = [_word(seed), *(_word(k) for k in keys)]
    digest = hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


def generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` (seed, *keys)."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *keys))


def _word(key: int | str) -> str:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        if hasattr(key, "__index__") and not isinstance(key, bool):  # numpy integers
            return f"i{int(key)}"
        raise TypeError(f"derive_seed: keys must be int or str, got {type(key).__name__} {key!r}")
    return f"i{key}" if isinstance(key, int) else f"s{key}"


def member_seeds(seed: int, members: int) -> list[int]:
    """Initialization seed of member k = 0 … members−1 under run seed ``seed``: ``derive_seed(seed, "init", k)``.
    Every method that draws θ0 uses it, so one member seed gives one θ0 whatever the method's mode or dtype."""
    return [derive_seed(seed, "init", k) for k in range(int(members))]
