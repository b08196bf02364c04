"""Context parallelism with Transformer Engine: CP=2 trains like CP=1 (needs 2 GPUs).

Both runs start from the same iteration-0 weights and see the same global batches; the CP=2
run splits each sequence over two ranks (attention exchanges keys/values inside TE), so the
losses, the validation loss and the gradient norms must match the single-GPU run up to bf16
rounding. Random-length truncation is off: at CP=2 truncated lengths round to multiples of 4, on
one GPU they do not (tests/objectives/test_context_parallel.py covers truncation with CP).
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from megatron_dlm.testing import run_distributed
from tests.training.workers import TINY_MODEL, pretrain_worker

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("transformer_engine") is None, reason="Transformer Engine missing"
    ),
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.device_count() < 2,
        reason="context parallelism needs 2 GPUs",
    ),
]

COMMON = [
    "--transformer-impl", "transformer_engine", "--bf16", "--train-iters", "4",
    "--micro-batch-size", "2", "--global-batch-size", "4", "--lr-warmup-iters", "0",
    "--eval-interval", "4", "--dlm-random-length-prob", "0",
]  # fmt: skip


def _run(tiny_data, save, world, extra, init=None) -> list[dict]:
    argv = [*tiny_data.flags(), *TINY_MODEL, *COMMON, *extra, "--save", str(save)]
    if init is not None:
        argv += ["--load", str(init), "--finetune"]
    return run_distributed(pretrain_worker, world, args=(argv, str(save)))[0]


@pytest.mark.parametrize("objective", ["dlm", "ar"])
def test_cp2_equals_cp1(tiny_data, tmp_path, objective):
    model = ["--objective", objective]
    init = tmp_path / "init"
    _run(tiny_data, init, 1, [*model, "--train-iters", "1", "--lr", "0", "--min-lr", "0"])
    reference = _run(tiny_data, tmp_path / "cp1", 1, model, init)
    split = _run(tiny_data, tmp_path / "cp2", 2, [*model, "--context-parallel-size", "2"], init)
    for split_name in ("train", "valid"):
        ref = [r for r in reference if r["split"] == split_name]
        got = [r for r in split if r["split"] == split_name]
        assert len(ref) == len(got) > 0
        for a, b in zip(ref, got):
            assert b["loss"] == pytest.approx(a["loss"], rel=2e-2), (split_name, b["iteration"])
            if split_name == "train":
                assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=5e-2), b["iteration"]
