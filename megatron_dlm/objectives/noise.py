"""The masked-diffusion forward process: masking ratios, token masks and loss weights.

Every random number comes from :mod:`~megatron_dlm.objectives.counter_rng`, keyed by
identifiers of the sample (training: ``(seed, sample_id, epoch)``; validation:
``(seed, sample_id)``), so a sample's noise does not depend on the batch it sits in, the
rank that computes it, or what was drawn before. Token ``j`` of a sample always uses number
``j`` of its stream: a truncated sequence is masked like the prefix of the full one.

Arrays here are NumPy (the noise is built on the CPU, in the data path); shapes are
batch-first, ``[b, s]``, like the batches that megatron-core's datasets yield.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from megatron_dlm.objectives.counter_rng import Stream, stream_key, uniforms


def sample_key(
    seed: int,
    sample_id: np.ndarray,
    epoch: np.ndarray,
    *,
    training: bool,
    streams: tuple[Stream, Stream],
) -> np.ndarray:
    """Stream key of each sample: ``streams[0]`` keyed by (seed, sample_id, epoch) for
    training, ``streams[1]`` keyed by (seed, sample_id) for validation, so a validation sample
    gets the same noise at every evaluation.

    Returns:
        ``uint64`` ``[b]``.
    """
    if training:
        return stream_key(seed, streams[0], sample_id, epoch)
    return stream_key(seed, streams[1], sample_id)


def masking_ratios(
    seed: int,
    sample_id: np.ndarray,
    epoch: np.ndarray,
    *,
    eps: float,
    training: bool,
    stratify: tuple[int, np.ndarray, int] | None = None,
) -> np.ndarray:
    """Masking ratio t of each sample, uniform on [eps, 1).

    Args:
        seed: the run's seed.
        sample_id: int64 ``[b]``, the samples' identities.
        epoch: int64 ``[b]``, their visit numbers (ignored for validation).
        eps: the smallest ratio.
        training: training (key ``(seed, sample_id, epoch)``) or validation
            (``(seed, sample_id)``).
        stratify: ``(batch_key, positions [b], global_batch_size)`` to stratify over the
            global batch: ``t_i = eps + (1 - eps) * ((u + i / B) mod 1)`` with ``u`` one uniform
            per ``batch_key`` and ``i`` a sample's position in the global batch of size ``B``.
            The B samples of a global batch then cover [eps, 1) evenly (one per stratum).

    Returns:
        float64 ``[b]``.
    """
    if stratify is not None:
        batch_key, positions, global_batch_size = stratify
        positions = np.asarray(positions, dtype=np.int64)
        if positions.min(initial=0) < 0 or positions.max(initial=0) >= global_batch_size:
            raise ValueError(
                f"global batch positions must lie in [0, {global_batch_size}), got "
                f"[{positions.min()}, {positions.max()}]"
            )
        offset = uniforms(stream_key(seed, Stream.STRATIFY, batch_key), 1)[0, 0]
        unit = np.mod(offset + positions / global_batch_size, 1.0)
    else:
        keys = sample_key(
            seed, sample_id, epoch, training=training, streams=(Stream.TRAIN_T, Stream.VALID_T)
        )
        unit = uniforms(keys, 1)[:, 0]
    return eps + (1.0 - eps) * unit


def token_uniforms(
    seed: int,
    sample_id: np.ndarray,
    epoch: np.ndarray,
    length: int,
    *,
    training: bool,
    streams: tuple[Stream, Stream] = (Stream.TRAIN_MASK, Stream.VALID_MASK),
) -> np.ndarray:
    """One uniform per token: float64 ``[b, length]`` (token ``j`` uses number ``j``)."""
    return uniforms(sample_key(seed, sample_id, epoch, training=training, streams=streams), length)


def mask_tokens(
    token_uniform: np.ndarray,
    t: np.ndarray,
    loss_mask: np.ndarray,
    *,
    at_least_one: bool = False,
) -> np.ndarray:
    """Mask each loss token independently with probability t (the linear schedule).

    Args:
        token_uniform: float64 ``[b, s]`` from :func:`token_uniforms`.
        t: masking ratios ``[b]``.
        loss_mask: bool ``[b, s]``: the tokens that may be masked and carry loss (padding
            and other ``loss_mask == 0`` positions are never masked).
        at_least_one: in a sequence with loss tokens but none masked, mask the loss token
            whose uniform is smallest (the one that a slightly larger t would have masked).

    Returns:
        bool ``[b, s]``, True where the input is replaced by the mask token.
    """
    masked = (token_uniform < t[:, None]) & loss_mask
    if at_least_one:
        empty = ~masked.any(axis=1) & loss_mask.any(axis=1)
        if empty.any():
            rows = np.nonzero(empty)[0]
            first = np.argmin(np.where(loss_mask[rows], token_uniform[rows], np.inf), axis=1)
            masked[rows, first] = True
    return masked


def diffusion_loss_weights(
    masked: np.ndarray,
    loss_mask: np.ndarray,
    t: np.ndarray,
    weighting: Literal["inv_t", "realised"],
) -> np.ndarray:
    """Weight of each position's cross-entropy in the masked-diffusion loss.

    Args:
        masked: bool ``[b, s]`` from :func:`mask_tokens`.
        loss_mask: bool ``[b, s]``, the sequence's loss tokens.
        t: masking ratios ``[b]``.
        weighting: ``inv_t``: ``1/t`` (the ELBO's weight); ``realised``: one over the
            sequence's realised masked fraction, ``n_loss / n_masked``.

    Returns:
        float32 ``[b, s]``: the weight at masked positions, 0 elsewhere.
    """
    if weighting == "inv_t":
        per_row = 1.0 / t
    elif weighting == "realised":
        n_masked = masked.sum(axis=1)
        per_row = loss_mask.sum(axis=1) / np.maximum(n_masked, 1)
    else:
        raise ValueError(f"unknown masked-diffusion loss weighting {weighting!r}")
    return np.where(masked, per_row[:, None], 0.0).astype(np.float32)


def input_mask(
    seed: int,
    sample_id: np.ndarray,
    epoch: np.ndarray,
    candidates: np.ndarray,
    prob: float,
) -> np.ndarray:
    """The input-masking regulariser: which inputs to hide (training samples only).

    Args:
        seed, sample_id, epoch: the sample's identity, as for the diffusion noise (the
            numbers come from a stream of their own).
        candidates: bool ``[b, s]``, positions that may be hidden.
        prob: probability of hiding each candidate.

    Returns:
        bool ``[b, s]``.
    """
    u = token_uniforms(
        seed,
        sample_id,
        epoch,
        candidates.shape[1],
        training=True,
        streams=(Stream.INPUT_MASK, Stream.INPUT_MASK),
    )
    return (u < prob) & candidates
