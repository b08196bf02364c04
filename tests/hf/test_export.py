"""Exported models compute the Megatron model's logits, load offline, and sample identically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from megatron_dlm.hf.verify import load_exported
from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import batch

TOL = dict(rtol=1e-5, atol=1e-5)


def _logits(model, tokens, mask=None):
    with torch.no_grad():
        return model(input_ids=tokens, attention_mask=mask).logits


def test_logits_equal_megatron(exported):
    ok, diff = exported.verify
    assert ok, f"--verify failed for {exported.name}: max difference {diff}"
    tokens, valid = batch()
    (reference,) = run_distributed(
        workers.reference_logits, 1, args=(str(exported.checkpoint), tokens, valid)
    )
    logits = _logits(load_exported(exported.export), tokens, valid)
    assert logits.shape == (2, 24, workers.VOCAB.size)
    torch.testing.assert_close(logits[valid], reference[valid], **TOL)
    if exported.saved_logits is not None:  # the model as it ran at its saved TP/EP layout
        torch.testing.assert_close(logits[valid], exported.saved_logits[valid], **TOL)


def test_padded_rows_compute_what_they_compute_alone(exported):
    model = load_exported(exported.export)
    tokens, valid = batch()
    padded = _logits(model, tokens, valid)
    start = int((~valid[1]).sum())
    alone = _logits(model, tokens[1:, start:])
    torch.testing.assert_close(padded[1, start:], alone[0], **TOL)
    # Right padding: the same row at the front of the batch.
    right = torch.full_like(tokens[1:], workers.VOCAB.pad_id)
    right[0, : 24 - start] = tokens[1, start:]
    right_mask = torch.zeros_like(valid[1:])
    right_mask[0, : 24 - start] = True
    torch.testing.assert_close(_logits(model, right, right_mask)[0, : 24 - start], alone[0], **TOL)


def test_attention_direction_follows_objective(exported):
    model = load_exported(exported.export)
    tokens, _ = batch()
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % workers.VOCAB.size
    moved = (_logits(model, tokens)[:, 0] - _logits(model, changed)[:, 0]).abs().max().item()
    if exported.objective == "ar":
        assert moved == 0.0, "a causal model's first position saw the last token"
    else:
        assert moved > 1e-3, "a diffusion model's first position did not see the last token"


def test_config_and_files(exported):
    names = {p.name for p in exported.export.iterdir()}
    assert {
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "configuration_megatron_dlm.py", "modeling_megatron_dlm.py",
        "options.py", "common.py", "diffusion.py", "autoregressive.py", "generation.py",
        "megatron_dlm.json",
    } <= names  # fmt: skip
    assert not any(n.startswith(".") for n in os.listdir(exported.export.parent))
    config = json.loads((exported.export / "config.json").read_text())
    head = "AutoModelForMaskedLM" if exported.objective == "dlm" else "AutoModelForCausalLM"
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", head}
    assert config["is_causal"] == (exported.objective == "ar")
    assert (config["vocab_size"], config["mask_token_id"]) == (100, 99)
    assert (config["eos_token_id"], config["pad_token_id"]) == (1, 0)


OFFLINE_SCRIPT = r"""
import json, sys
for name in ("megatron_dlm", "megatron", "tests"):
    sys.modules[name] = None  # the exported folder must not need them
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM,
                          AutoTokenizer)
results = {}
for path in sys.argv[1:]:
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    head, other = ((AutoModelForCausalLM, AutoModelForMaskedLM) if config.is_causal
                   else (AutoModelForMaskedLM, AutoModelForCausalLM))
    model = head.from_pretrained(path, trust_remote_code=True).eval()
    base = AutoModel.from_pretrained(path, trust_remote_code=True)
    try:
        other.from_pretrained(path, trust_remote_code=True)
        wrong_head = "loaded"
    except (ValueError, KeyError) as exc:
        wrong_head = "refused"
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    ids = tok("w5 w6 w7 w8", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    out = model.generate(ids, max_new_tokens=8, steps=8, block_length=8)
    results[path] = dict(
        config=type(config).__name__, model=type(model).__name__, base=type(base).__name__,
        wrong_head=wrong_head, ids=ids.tolist(), logits=logits.tolist(),
        generated=out.tolist(), text=tok.decode(out[0, 4:]),
        special=[tok.mask_token_id, tok.eos_token_id, tok.pad_token_id],
    )
print("RESULT" + json.dumps(results))
"""


def test_loads_offline_without_megatron_dlm(exported_dlm, exported_ar, tmp_path):
    """A fresh interpreter that cannot import megatron_dlm or megatron loads both exports."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH="")  # fmt: skip
    # transformers names a folder's remote code after the folder: both exports are called
    # "hf", so one of them gets another name (else AutoModel reuses the first one's class).
    ar_export = tmp_path / "ar_hf"
    shutil.copytree(exported_ar.export, ar_export)
    paths = [str(exported_dlm.export), str(ar_export)]
    proc = subprocess.run(
        [sys.executable, "-c", OFFLINE_SCRIPT, *paths],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("RESULT", 1)[1])
    # A DLM answers AutoModel with its logits (as LLaDA and Dream); an AR model with the
    # transformer alone (transformers' convention).
    for path, head, base in ((paths[0], "ForMaskedLM", "MegatronDLMForMaskedLM"),
                             (paths[1], "ForCausalLM", "MegatronDLMModel")):  # fmt: skip
        got = results[path]
        assert got["config"] == "MegatronDLMConfig"
        assert got["model"] == f"MegatronDLM{head}"
        assert got["base"] == base
    # The other head is refused (checked on the first folder: transformers registers remote
    # classes per process, and both folders' code is the same module).
    assert results[str(exported_dlm.export)]["wrong_head"] == "refused"
    for exported, path in ((exported_dlm, paths[0]), (exported_ar, paths[1])):
        got = results[path]
        assert got["ids"] == [[5, 6, 7, 8]]
        assert got["special"] == [99, 1, 0]
        assert len(got["generated"][0]) == 12
        local = _logits(load_exported(exported.export), torch.tensor(got["ids"]))
        torch.testing.assert_close(torch.tensor(got["logits"]), local, **TOL)


SAMPLING = {
    "greedy": dict(gen_length=8, steps=8, block_length=4),
    "sampled": dict(
        gen_length=8,
        steps=4,
        block_length=8,
        temperature=1.0,
        top_k=20,
        seed=3,
        remasking="margin",
    ),  # fmt: skip
    "prefix-cache": dict(gen_length=8, steps=8, block_length=4, cache="prefix"),
    "dual-cache": dict(gen_length=8, steps=4, block_length=4, cache="dual", temperature=0.7),
}


@pytest.mark.parametrize("options", list(SAMPLING))
def test_generate_equals_megatron_sampler(exported_for_sampling, options):
    exported, options = exported_for_sampling, SAMPLING[options]
    prompts = [[5, 6, 7, 8, 9], [10, 11]]
    (expected,) = run_distributed(
        workers.megatron_generate, 1, args=(str(exported.checkpoint), prompts, options)
    )
    model = load_exported(exported.export)
    assert model.generate_sequences(prompts, **options).sequences == expected
    # Hugging Face style: left-padded input_ids and attention_mask in, prompt + tokens out.
    pad = workers.VOCAB.pad_id
    input_ids = torch.tensor([prompts[0], [pad] * 3 + prompts[1]])
    mask = torch.tensor([[1] * 5, [0] * 3 + [1] * 2])
    out = model.generate(input_ids, attention_mask=mask, **options)
    assert torch.equal(out[:, :5], input_ids)
    for row, sequence in enumerate(expected):
        assert out[row, 5:].tolist() == sequence + [pad] * (out.shape[1] - 5 - len(sequence))


def test_generation_options(exported_dlm):
    model = load_exported(exported_dlm.export)
    defaults = model.sampling_options()  # generation_config.json: the sampler's defaults
    assert (defaults.gen_length, defaults.steps, defaults.block_length) == (128, 128, 32)
    assert defaults.temperature == 0.0
    opts = model.sampling_options(max_new_tokens=16, steps=4, block_length=8, do_sample=True)
    assert (opts.gen_length, opts.steps, opts.temperature) == (16, 4, 1.0)
    assert model.sampling_options(temperature=0.5, threshold=0.9).temperature == 0.5
    with pytest.raises(TypeError, match="unknown generation options: num_beams"):
        model.sampling_options(num_beams=4)
    with pytest.raises(ValueError, match="--steps"):
        model.sampling_options(max_new_tokens=16, block_length=8, steps=3)


def test_tools_generate_and_inference_read_the_export(exported_dlm, capsys):
    """tools/generate.py --hf and megatron_dlm.inference (what lm-eval uses) load the folder."""
    import importlib.util

    from megatron_dlm.inference import load_model

    path = workers.ROOT / "tools/generate.py"
    spec = importlib.util.spec_from_file_location("generate_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = ["--hf", str(exported_dlm.export), "--prompt", "w5 w6 w7", "--gen-length", "8",
            "--steps", "8", "--block-length", "8", "--device", "cpu",
            "--cache", "dual"]  # fmt: skip
    assert tool.main(argv) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["prompt"] == "w5 w6 w7" and record["forward_passes"] == 8

    model = load_model(str(exported_dlm.export), device="cpu")
    assert model.source == "hf" and model.bidirectional and model.max_length == 32
    assert (model.mask_id, model.eos_id, model.pad_id, model.vocab_size) == (99, 1, 0, 100)
    assert model.tokenize("w5 w6") == [5, 6]
    tokens, valid = batch()
    expected = _logits(load_exported(exported_dlm.export), tokens, valid)
    torch.testing.assert_close(model.logits_fn(tokens, valid)[valid], expected[valid], **TOL)
