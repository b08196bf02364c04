"""Layer specs, vocabulary padding and the Transformer Engine requirement."""

from __future__ import annotations

import importlib.util

import pytest

from megatron_dlm.models.vocab import Vocab, padded_vocab_size


def test_vocab_is_padded_like_megatron():
    assert padded_vocab_size(250, 128, 1) == 256
    assert padded_vocab_size(250, 128, 2) == 256
    assert padded_vocab_size(257, 128, 2) == 512
    assert padded_vocab_size(32000, 128, 8) == 32768
    assert Vocab(size=250, mask_id=249, eod_id=0, pad_id=1).padded_size(64, 4) == 256


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(size=10, mask_id=10, eod_id=0, pad_id=1), "mask_id=10 is outside"),
        (dict(size=10, mask_id=0, eod_id=0, pad_id=1), "must differ"),
        (dict(size=0, mask_id=0, eod_id=0, pad_id=0), "must be positive"),
    ],
)
def test_vocab_rejects_bad_special_ids(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Vocab(**kwargs)


@pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is not None,
    reason="Transformer Engine is installed here",
)
def test_transformer_engine_spec_without_te_says_what_to_install():
    from megatron_dlm.models.specs import MissingDependencyError, require_transformer_engine

    with pytest.raises(
        MissingDependencyError, match=r"megatron-dlm\[gpu\].*--transformer-impl local"
    ):
        require_transformer_engine()


@pytest.mark.skipif(
    importlib.util.find_spec("transformer_engine") is not None,
    reason="Transformer Engine is installed here",
)
def test_building_a_te_model_without_te_fails_clearly():
    from megatron_dlm.config import DLMConfig, ModelConfig
    from megatron_dlm.testing import DistributedTestError, run_distributed
    from tests.models import layout_workers as workers

    cfg = DLMConfig(
        model=ModelConfig(
            num_layers=1,
            hidden_size=32,
            num_attention_heads=2,
            seq_length=16,
            transformer_impl="transformer_engine",
        )
    ).to_dict()
    with pytest.raises(DistributedTestError, match="MissingDependencyError.*Transformer Engine"):
        run_distributed(workers.attention_probe, 1, args=(cfg,))
