"""Every random number generator a training step draws from, saved and restored as one."""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator

import numpy as np
import torch
from megatron.core import tensor_parallel


def _tracker_states() -> dict:
    states = tensor_parallel.get_cuda_rng_tracker().get_states()
    return {name: state.clone() for name, state in states.items()}


@contextlib.contextmanager
def preserved_rng_states() -> Iterator[None]:
    """Leave Python's, NumPy's, torch's (CPU and every CUDA device) generators and megatron-core's
    tensor-parallel RNG tracker as they were, whatever the body draws or seeds.

    For work between training steps that must not move the training trajectory (lm-eval seeds
    the global generators itself): the next step then draws exactly what it would have.
    """
    python_state = random.getstate()
    numpy_state = copy.deepcopy(np.random.get_state())
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    tracker_states = _tracker_states()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        tensor_parallel.get_cuda_rng_tracker().set_states(tracker_states)
