"""preserved_rng_states: the draws after the block are those without it."""

from __future__ import annotations

import random

import numpy as np
import torch

from megatron_dlm.runtime.rng import preserved_rng_states


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_the_next_draws_are_those_without_the_block():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = _draws()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    with preserved_rng_states():
        _draws()
        random.seed(0), np.random.seed(1234), torch.manual_seed(1234)  # as lm-eval does
        _draws()
    assert _draws() == expected


def test_restored_after_an_error_too():
    torch.manual_seed(5)
    expected = float(torch.rand(()))
    torch.manual_seed(5)
    try:
        with preserved_rng_states():
            torch.manual_seed(6)
            raise ValueError("inside")
    except ValueError:
        pass
    assert float(torch.rand(())) == expected
