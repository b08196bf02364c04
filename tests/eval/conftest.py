"""``trained``: a tiny DLM checkpoint trained for a few steps, and its Hugging Face export."""

from __future__ import annotations

import pytest

from megatron_dlm.testing import run_distributed
from tests.eval import workers
from tests.training.workers import TINY_MODEL, pretrain_worker


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory):
    """``<root>/ckpt`` (Megatron checkpoint) and ``<root>/hf`` (its export)."""
    root = tmp_path_factory.mktemp("trained")
    argv = [*tiny_data.flags(), *TINY_MODEL, "--train-iters", "4", "--save", str(root / "ckpt")]
    run_distributed(pretrain_worker, 1, args=(argv, str(root / "ckpt")))
    run_distributed(workers.export_worker, 1, args=(str(root / "ckpt"), str(root / "hf")))
    return root
