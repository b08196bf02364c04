"""Counter-based random numbers: uniforms that are pure functions of integer keys.

The noise of a training sample must depend on (seed, sample id, epoch) only: not on the
order of the batch, the rank that computes it, or how many random numbers were drawn before.
A stateful generator (``torch.Generator`` per sample) gives that at the price of a Python
loop and a generator object per sample; a counter-based generator gives it for free: the
``n``-th number of the stream keyed by ``k`` is ``mix(k + n * GOLDEN)``.

``mix`` is the splitmix64 output function (Steele, Lea & Flood, 2014): a bijection of
64-bit words with full avalanche, whose streams pass BigCrush. Keys are chained the same
way: ``key = mix(mix(...mix(seed ^ stream)...) ^ id)``. Everything is vectorised NumPy
``uint64`` arithmetic (wrapping multiplication, logical shifts), so a ``[8, 2048]`` block of
uniforms costs about as much as a few element-wise tensor ops.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: the splitmix64 increment
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 2.0**-53


class Stream(IntEnum):
    """Independent random streams: one per use, so no two uses ever share numbers."""

    TRAIN_T = 1
    """Masking ratio t of a training sample."""
    TRAIN_MASK = 2
    """Per-token mask uniforms of a training sample."""
    VALID_T = 3
    """Masking ratio t of a validation sample."""
    VALID_MASK = 4
    """Per-token mask uniforms of a validation sample."""
    STRATIFY = 5
    """The offset u of a stratified global batch."""
    INPUT_MASK = 6
    """Per-token uniforms of the input-masking regulariser."""
    LENGTH = 7
    """Random-length truncation of a micro-batch."""


def _as_words(values: np.ndarray | int) -> np.ndarray:
    """Integers (negative ones wrap, as two's complement) as a 1-d+ ``uint64`` array."""
    return np.atleast_1d(np.asarray(values, dtype=np.int64)).astype(np.uint64)


def mix(words: np.ndarray) -> np.ndarray:
    """splitmix64's output function on ``uint64`` arrays (a bijection; no array is modified)."""
    z = words ^ (words >> np.uint64(30))
    z = z * _MUL1
    z ^= z >> np.uint64(27)
    z *= _MUL2
    z ^= z >> np.uint64(31)
    return z


def stream_key(seed: int, stream: Stream, *ids: np.ndarray | int) -> np.ndarray:
    """Key of the stream identified by ``(seed, stream, *ids)``.

    Args:
        seed: the run's seed.
        stream: which use the numbers are for.
        *ids: integer identifiers, each a scalar or an array; arrays broadcast together
            (e.g. sample ids ``[b]`` and epochs ``[b]``).

    Returns:
        ``uint64`` keys, the broadcast shape of ``ids`` (at least ``[1]``).
    """
    key = mix(_as_words(seed) ^ (_as_words(int(stream)) * _GOLDEN))
    for value in ids:
        key = mix(key ^ mix(_as_words(value) + _GOLDEN))
    return key


def uniforms(keys: np.ndarray, count: int, offset: int = 0) -> np.ndarray:
    """Numbers ``offset .. offset + count - 1`` of each keyed stream, uniform on [0, 1).

    Args:
        keys: ``uint64`` stream keys, shape ``[b]``.
        count: how many numbers per stream.
        offset: index of the first number (number ``n`` does not depend on ``count``).

    Returns:
        float64 array ``[b, count]`` with 53 random bits per number.
    """
    counters = np.arange(offset + 1, offset + count + 1, dtype=np.uint64) * _GOLDEN
    words = mix(keys.reshape(-1, 1) + counters)
    return (words >> np.uint64(11)).astype(np.float64) * _TO_UNIT
