"""A toy language whose likelihoods can be enumerated, and denoisers for it.

Sequences of ``LENGTH`` tokens over ``VOCAB`` real tokens (ids ``0 .. VOCAB-1``); the mask
token is ``MASK_ID = VOCAB``, so logits have ``VOCAB + 1`` classes. A denoiser is a table of
logits ``[(VOCAB+1)^LENGTH, LENGTH, VOCAB+1]`` indexed by the noisy input sequence: any table
is a (possibly bad) model, and :func:`true_denoiser` holds the exact conditionals
``p(x_i | unmasked tokens)`` of the joint distribution.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

VOCAB = 3
LENGTH = 4
MASK_ID = VOCAB
CLASSES = VOCAB + 1
ALL_SEQUENCES = np.array(list(itertools.product(range(VOCAB), repeat=LENGTH)), dtype=np.int64)
ALL_INPUTS = np.array(list(itertools.product(range(CLASSES), repeat=LENGTH)), dtype=np.int64)
_PLACE = CLASSES ** np.arange(LENGTH - 1, -1, -1)


def joint_distribution(seed: int = 0) -> np.ndarray:
    """A random joint p(x) over ``ALL_SEQUENCES`` (float64 ``[VOCAB^LENGTH]``, sums to 1)."""
    energy = np.random.default_rng(seed).normal(scale=1.5, size=len(ALL_SEQUENCES))
    p = np.exp(energy)
    return p / p.sum()


def input_index(inputs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Row of a denoiser table for each noisy input ``[n, LENGTH]``."""
    return np.asarray(inputs) @ _PLACE


def true_denoiser(p: np.ndarray) -> torch.Tensor:
    """Logits of the exact conditionals p(x_i = v | tokens of the input that are not masked)."""
    table = np.full((len(ALL_INPUTS), LENGTH, CLASSES), -30.0)
    visible = ALL_INPUTS != MASK_ID  # [inputs, LENGTH]
    # consistent[y, x]: sequence x agrees with input y wherever y is not masked.
    agree = (ALL_INPUTS[:, None, :] == ALL_SEQUENCES[None, :, :]) | ~visible[:, None, :]
    weight = np.where(agree.all(axis=2), p[None, :], 0.0)  # [inputs, sequences]
    for i in range(LENGTH):
        for v in range(VOCAB):
            mass = weight[:, ALL_SEQUENCES[:, i] == v].sum(axis=1) / weight.sum(axis=1)
            table[:, i, v] = np.log(np.maximum(mass, 1e-300))
    return torch.from_numpy(table.astype(np.float64))


def random_denoiser(seed: int = 1) -> torch.Tensor:
    """An arbitrary model: random logits for every input and position."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(len(ALL_INPUTS), LENGTH, CLASSES, generator=gen, dtype=torch.float64) * 2


def logits_for(table: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The denoiser's logits ``[n, LENGTH, CLASSES]`` (fp32) for noisy inputs ``[n, LENGTH]``."""
    return table[torch.from_numpy(input_index(inputs))].float()


def order_log_likelihoods(table: torch.Tensor, x: np.ndarray) -> np.ndarray:
    """log Q_sigma(x) for every unmasking order sigma (``[LENGTH!]``, float64).

    Q_sigma is the autoregressive model that reveals positions in the order sigma, each from
    the denoiser's conditional given the tokens revealed so far: a (sub-)probability
    distribution over sequences for every sigma, whatever the denoiser.
    """
    log_softmax = torch.log_softmax(table, dim=-1).numpy()
    out = []
    for order in itertools.permutations(range(LENGTH)):
        noisy = np.full(LENGTH, MASK_ID)
        total = 0.0
        for pos in order:
            total += log_softmax[input_index(noisy[None])[0], pos, x[pos]]
            noisy[pos] = x[pos]
        out.append(total)
    assert len(out) == math.factorial(LENGTH)
    return np.array(out)
