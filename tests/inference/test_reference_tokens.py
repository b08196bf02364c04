"""With the cache off, the inference path reproduces the sampler's tokens from before it existed.

``data/reference_tokens.json`` holds what the sampler produced at commit b2581cc (before the
inference package, KV caches and on-device sampling) for option combinations that cover every
sampling option, on the seeded tiny models of :mod:`tests.inference.workers`. To regenerate it
after an intended change, run :func:`tests.inference.workers.generate_all` with the same inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megatron_dlm.testing import run_distributed
from tests.inference import workers

REFERENCE = json.loads((Path(__file__).parent / "data" / "reference_tokens.json").read_text())


def _check(reference: list[dict], outputs: list[dict]) -> None:
    for ref, got in zip(reference, outputs, strict=True):
        assert got["sequences"] == ref["sequences"], ref["options"]
        assert got["forward_passes"] == ref["forward_passes"], ref["options"]
        assert (got["steps"], got["stopped_at_eos"]) == (ref["steps"], ref["stopped_at_eos"])
        assert got["single"] == ref["sequences"], ref["options"]  # and one by one


@pytest.mark.parametrize("objective", ["dlm", "ar"])
def test_no_cache_reproduces_the_reference_tokens(objective):
    reference = REFERENCE[objective]
    assert {k for r in reference for k in r["options"]} >= (
        {"remasking", "temperature", "top_k", "top_p", "threshold", "cfg_scale", "seed",
         "stop_at_eos", "truncate_after_eos", "suppress_early_eos"}
        if objective == "dlm" else {"temperature", "top_k", "top_p", "seed"}
    )  # fmt: skip
    runs = [r["options"] for r in reference]
    (outputs,) = run_distributed(
        workers.generate_all,
        1,
        args=(workers.model_config(objective), REFERENCE["prompts"], runs),
    )
    _check(reference, outputs)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_ar_kv_cache_gives_the_same_tokens(cache):
    reference = REFERENCE["ar"]
    runs = [dict(r["options"], cache=cache) for r in reference]
    (outputs,) = run_distributed(
        workers.generate_all, 1, args=(workers.model_config("ar"), REFERENCE["prompts"], runs)
    )
    _check(reference, outputs)
