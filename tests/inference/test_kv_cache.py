"""KV caches in the Megatron path: exact where they must be, batch-invariant everywhere."""

from __future__ import annotations

import pytest
import torch

from megatron_dlm.config.sampling import SamplingConfig
from megatron_dlm.sampling import autoregressive_generate, diffusion_generate
from megatron_dlm.testing import run_distributed
from tests.inference import workers


@pytest.mark.parametrize(
    "objective, model",
    [("dlm", {}), ("ar", {}), ("dlm", dict(num_query_groups=2, qk_layernorm=True)),
     ("dlm", dict(position_embedding_type="learned_absolute"))],
    ids=["dlm", "ar", "dlm-gqa-qknorm", "dlm-learned-positions"],
)  # fmt: skip
def test_a_cached_pass_right_after_the_refresh_is_the_full_pass(objective, model):
    (errors,) = run_distributed(
        workers.cached_pass_errors, 1, args=(workers.model_config(objective, **model),)
    )
    assert errors and max(errors.values()) < 1e-5, errors


RUNS = [
    dict(gen_length=16, block_length=8, steps=16),
    dict(gen_length=16, block_length=4, steps=8, temperature=1.0, remasking="random"),
    dict(gen_length=16, block_length=8, steps=16, threshold=0.05, temperature=0.5),
    dict(gen_length=16, block_length=8, steps=16, cfg_scale=1.0, remasking="margin"),
    dict(gen_length=24, block_length=8, steps=24, temperature=0.8, top_p=0.9, seed=5),
]


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_dlm_caches_decode_a_batch_as_one_by_one(cache):
    runs = [dict(r, cache=cache) for r in RUNS]
    (outputs,) = run_distributed(
        workers.generate_all, 1, args=(workers.model_config("dlm"), workers.PROMPTS, runs)
    )
    for options, out in zip(runs, outputs):
        assert out["sequences"] == out["single"], options
        if options.get("threshold") is None:  # one pass per step, as without the cache
            passes = options["steps"] * (2 if options.get("cfg_scale") else 1)
            assert all(p <= passes for p in out["forward_passes"])
            assert any(p == passes for p in out["forward_passes"]), out["forward_passes"]


def test_dual_cache_at_tp2_equals_tp1():
    runs = [dict(RUNS[0], cache="dual"), dict(RUNS[1], cache="prefix")]
    (tp1,) = run_distributed(
        workers.generate_all, 1, args=(workers.model_config("dlm"), workers.PROMPTS, runs)
    )
    tp2 = run_distributed(
        workers.generate_all, 2, args=(workers.model_config("dlm", tp=2), workers.PROMPTS, runs)
    )
    for rank in tp2:
        assert [o["sequences"] for o in rank] == [o["sequences"] for o in tp1]


def test_a_cache_needs_a_model_that_keeps_one():
    def plain(tokens, valid):
        return torch.zeros(*tokens.shape, 8)

    opts = SamplingConfig(gen_length=4, block_length=4, steps=4, cache="dual")
    with pytest.raises(ValueError, match="--cache dual: this model's logits function keeps no"):
        diffusion_generate(plain, [[1]], mask_id=7, pad_id=0, options=opts)
    with pytest.raises(ValueError, match="--cache dual"):
        autoregressive_generate(plain, [[1]], pad_id=0, options=opts)
