"""The objective decides the attention mask: bidirectional for DLMs, causal for AR."""

from __future__ import annotations

import pytest

from megatron_dlm.config import DLMConfig, ModelConfig, ObjectiveConfig
from megatron_dlm.testing import run_distributed
from tests.models import layout_workers as workers
from tests.modern import modern_model


def _cfg(objective: str, **model) -> dict:
    return DLMConfig(
        model=ModelConfig(
            **modern_model(
                num_layers=2, hidden_size=64, num_attention_heads=4, seq_length=16, **model
            )
        ),
        objective=ObjectiveConfig(objective=objective),
    ).to_dict()


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_dlm_attention_is_bidirectional_and_ar_causal(moe):
    model = {"num_experts": 4} if moe else {}
    (dlm_change,) = run_distributed(workers.attention_probe, 1, args=(_cfg("dlm", **model),))
    (ar_change,) = run_distributed(workers.attention_probe, 1, args=(_cfg("ar", **model),))
    assert dlm_change > 1e-4, "DLM: the last token does not reach position 0"
    assert ar_change == 0.0, "AR: position 0 sees a later token"
