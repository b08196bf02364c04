"""Transformer Engine layers and FP8 on a GPU (skipped without CUDA)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig, PrecisionConfig
from megatron_dlm.testing import run_distributed
from tests.gpu import workers
from tests.modern import modern_model

needs_te = pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is None, reason="Transformer Engine missing"
)


def _cfg(objective="dlm", impl="transformer_engine", fp8=None, **model) -> dict:
    base = dict(num_layers=2, hidden_size=128, num_attention_heads=4, seq_length=128)
    return DLMConfig(
        model=ModelConfig(transformer_impl=impl, **modern_model(**{**base, **model})),
        precision=PrecisionConfig(bf16=True, fp8_format=fp8),
        objective=ObjectiveConfig(objective=objective),
    ).to_dict()


@needs_te
@pytest.mark.parametrize("objective", ["dlm", "ar"])
def test_te_model_trains_and_keeps_the_attention_mask(objective):
    (result,) = run_distributed(workers.te_probe, 1, args=(_cfg(objective),))
    assert result["grads_finite"] and result["loss"] > 0
    if objective == "dlm":
        assert result["first_position_change"] > 0
    else:
        assert result["first_position_change"] == 0


@needs_te
def test_te_moe_model_trains():
    (result,) = run_distributed(workers.te_probe, 1, args=(_cfg(num_experts=4),))
    assert result["grads_finite"]


@needs_te
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9),
    reason="FP8 needs compute capability >= 8.9 (Ada/Hopper)",
)
@pytest.mark.parametrize("fp8", ["e4m3", "hybrid"])
def test_fp8_forward_backward(fp8):
    (result,) = run_distributed(workers.te_probe, 1, args=(_cfg(fp8=fp8),))
    assert result["grads_finite"] and result["loss"] > 0


@needs_te
def test_te_and_local_specs_compute_the_same_model(tmp_path):
    diff = run_distributed(
        workers.local_vs_te_logits, 1, args=(_cfg(impl="local"), _cfg(), str(tmp_path))
    )[0]
    assert diff < 0.1, f"bf16 logits of the TE and local layers differ by {diff}"
