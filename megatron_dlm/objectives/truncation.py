"""Random-length truncation: now and then train on a shorter sequence (LLaDA: 1% of steps).

A model that only ever sees full-length sequences handles shorter inputs poorly at inference.
With probability p a micro-batch is cut to a random length, drawn from a key that every rank
shares, (seed, iteration, micro-batch index), so all tensor-, pipeline- and context-parallel
ranks agree on the shape without communicating.
"""

from __future__ import annotations

import math

from megatron_dlm.objectives.counter_rng import Stream, stream_key, uniforms


def random_length(
    seq_length: int,
    *,
    prob: float,
    seed: int,
    iteration: int,
    microbatch: int,
    multiple: int = 1,
) -> int:
    """Length of micro-batch ``microbatch`` of iteration ``iteration``.

    With probability ``prob`` the length is uniform on ``1 .. seq_length``, rounded up to a
    multiple of ``multiple`` (never above ``seq_length``); otherwise it is ``seq_length``.

    Args:
        seq_length: the full sequence length.
        prob: probability of truncating.
        seed: the run's seed.
        iteration: the training iteration.
        microbatch: the micro-batch's index within the iteration.
        multiple: what the length must be a multiple of: the TP size with sequence
            parallelism, 2 x CP with context parallelism, else 1 (``seq_length`` itself is
            assumed valid).

    Returns:
        The length, in ``[min(multiple, seq_length), seq_length]``.
    """
    if multiple < 1:
        raise ValueError(f"the length multiple must be at least 1, got {multiple}")
    if prob <= 0.0:
        return seq_length
    coin, draw = uniforms(stream_key(seed, Stream.LENGTH, iteration, microbatch), 2)[0]
    if coin >= prob:
        return seq_length
    length = 1 + int(draw * seq_length)
    return min(seq_length, math.ceil(length / multiple) * multiple)
