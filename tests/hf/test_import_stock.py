"""tools/convert_hf_to_megatron.py on stock AR checkpoints (Llama, Qwen2, Qwen3, Qwen2-MoE,
Mixtral), built locally with transformers' own classes: logits equal transformers' at TP=2, PP=2
and EP=2, the tokenizer gains the DLM's special tokens, and unsupported settings are refused."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import cli, stock_batch
from tests.hf.stock_models import (
    ARCHITECTURES,
    EOS_ID,
    MODEL_ROWS,
    TOKENIZER_SIZE,
    write_word_tokenizer,
)

TOL = dict(rtol=1e-5, atol=1e-5)
MOE = ("qwen2_moe", "mixtral")


def import_cli(*argv) -> tuple[int, str]:
    return cli("convert_hf_to_megatron.py", *argv)


@pytest.mark.parametrize("kind", list(ARCHITECTURES))
def test_import_verifies_against_transformers(imported, kind):
    result = imported[kind]
    assert result.status == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("verify against"))
    assert "OK" in line and ARCHITECTURES[kind][1] in line
    relative = float(re.search(r"\(([-+.\de]+) relative\)", line).group(1))
    assert relative < 1e-5, line
    assert (result.checkpoint / "iter_0000000").is_dir()
    assert (result.checkpoint / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    recipe = (result.checkpoint / "model.yaml").read_text()
    assert "tokenizer_type: HuggingFaceTokenizer" in recipe
    assert ("moe_shared_expert_gate: true" in recipe) == (kind == "qwen2_moe")


@pytest.mark.parametrize(
    "parallel, kinds",
    [
        (dict(tensor_model_parallel_size=2), list(ARCHITECTURES)),
        (dict(pipeline_model_parallel_size=2), list(ARCHITECTURES)),
        (dict(expert_model_parallel_size=2), list(MOE)),
    ],
    ids=["tp2", "pp2", "ep2"],
)
def test_imports_load_at_any_layout_with_transformers_logits(imported, parallel, kinds):
    tokens, valid = stock_batch()
    roots = [str(imported[k].checkpoint) for k in kinds]
    results = run_distributed(workers.logits_at_layout, 2, args=(roots, parallel, tokens, valid))
    logits = results[-1]  # the last pipeline stage (every rank at TP/EP)
    for kind, got in zip(kinds, logits):
        got = got[..., :TOKENIZER_SIZE]  # the tokens the import added are new
        torch.testing.assert_close(got[valid], imported[kind].reference[valid], **TOL,
                                   msg=lambda m, kind=kind: f"{kind}: {m}")  # fmt: skip


def test_tokenizer_gains_mask_and_pad_tokens_with_mean_rows(imported, tmp_path):
    from megatron_dlm.data.encoder import TextEncoder
    from megatron_dlm.data.tokenizer import DLMTokenizer

    result = imported["llama"]
    assert "tokens added: <|mask|>, <|pad|>" in result.output
    tokenizer_dir = result.checkpoint / "tokenizer"
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    assert (config["mask_token"], config["eos_token"], config["pad_token"]) == (
        "<|mask|>", "</s>", "<|pad|>",
    )  # fmt: skip
    # What training (and preprocessing) resolves from the folder: the recorded ids.
    for tokenizer in (DLMTokenizer(tokenizer_dir, "HuggingFaceTokenizer"),
                      TextEncoder(tokenizer_dir, "HuggingFaceTokenizer")):  # fmt: skip
        assert (tokenizer.vocab_size, tokenizer.mask_id, tokenizer.eod, tokenizer.pad) == (
            TOKENIZER_SIZE + 2, TOKENIZER_SIZE, EOS_ID, TOKENIZER_SIZE + 1,
        )  # fmt: skip
    (embedding,) = run_distributed(workers.imported_embedding, 1, args=(str(result.checkpoint),))
    source = load_file(result.hf / "model.safetensors")["model.embed_tokens.weight"]
    assert source.shape[0] == MODEL_ROWS
    assert torch.equal(embedding[:TOKENIZER_SIZE], source[:TOKENIZER_SIZE])
    mean = source[:TOKENIZER_SIZE].mean(0)
    torch.testing.assert_close(embedding[TOKENIZER_SIZE], mean)
    torch.testing.assert_close(embedding[TOKENIZER_SIZE + 1], mean)
    assert not embedding[TOKENIZER_SIZE + 2 :].any()  # Megatron's padding rows


@pytest.mark.parametrize(
    "flags, config, expected",
    [
        ([], {}, ("<|mask|>", "</s>", "<|pad|>", 2)),
        ([], {"pad_token": "<unk>"}, ("<|mask|>", "</s>", "<unk>", 1)),
        (["--mask-token", "w3", "--pad-token", "7"], {}, ("w3", "</s>", "w7", 0)),
        (["--mask-token", "[MASK]", "--eod-token", "w0"], {}, ("[MASK]", "w0", "<|pad|>", 2)),
    ],
    ids=["defaults", "own-pad", "named", "new-mask"],
)
def test_special_token_options(tmp_path, flags, config, expected):
    from megatron_dlm.hf.tokenizer_import import import_tokenizer

    source = write_word_tokenizer(tmp_path / "src", config)
    options = dict(zip(flags[::2], flags[1::2]))
    written = import_tokenizer(
        source,
        tmp_path / "out",
        mask_token=options.get("--mask-token"),
        eod_token=options.get("--eod-token"),
        pad_token=options.get("--pad-token"),
    )
    values = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    *roles, added = expected
    assert [values["mask_token"], values["eos_token"], values["pad_token"]] == roles
    assert written.size - written.original_size == added == len(written.added)


@pytest.mark.parametrize(
    "kind, edit, message",
    [
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0,
                                    "original_max_position_embeddings": 32}},
         "rope_scaling='llama3' is not supported"),
        ("qwen2", {"use_sliding_window": True, "sliding_window": 16}, "use_sliding_window"),
        ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
        ("llama", {"attention_bias": True}, "attention_bias=True is not supported"),
        ("qwen2_moe", {"decoder_sparse_step": 2}, "decoder_sparse_step=2"),
        ("qwen2_moe", {"mlp_only_layers": [0]}, "mlp_only_layers=[0]"),
        ("mixtral", {"router_jitter_noise": 0.1}, "router_jitter_noise=0.1"),
        ("llama", {"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ],
    ids=["rope-scaling", "sliding-window", "gelu", "attention-bias", "sparse-step",
         "dense-layers", "jitter", "gpt2"],
)  # fmt: skip
def test_unsupported_settings_are_refused(imported, tmp_path, kind, edit, message):
    hf = tmp_path / "hf"
    shutil.copytree(imported[kind].hf, hf)
    config = json.loads((hf / "config.json").read_text())
    config.update(edit)
    (hf / "config.json").write_text(json.dumps(config))
    status, text = import_cli("--hf", hf, "--save", tmp_path / "out")
    assert status == 2, text
    assert "error:" in text and message in text, text
    assert "Traceback" not in text
    assert not (tmp_path / "out").exists()


def test_bad_tokenizer_inputs_are_refused(imported, tmp_path):
    hf = tmp_path / "hf"
    shutil.copytree(imported["qwen3"].hf, hf)
    cases = [
        (["--eod-token", "nope"], "--eod-token 'nope' is not in the vocabulary"),
        (["--mask-token", "500"], "--mask-token 500: no such id"),
        (["--mask-token", "</s>"], "must be three different tokens"),
    ]
    for flags, message in cases:
        status, text = import_cli("--hf", hf, "--save", tmp_path / "out", *flags)
        assert status == 2 and message in text, text
        assert not (tmp_path / "out").exists()
    (hf / "tokenizer.json").unlink()
    status, text = import_cli("--hf", hf, "--save", tmp_path / "out")
    assert status == 2 and "has no tokenizer.json" in text, text


def test_import_into_a_folder_with_an_imported_tokenizer_is_refused(imported):
    result = imported["qwen2"]
    before = sorted(p.name for p in result.checkpoint.iterdir())
    status, text = import_cli("--hf", result.hf, "--save", result.checkpoint)
    assert status == 2 and "already holds checkpoints" in text and "--overwrite" in text, text
    status, text = import_cli("--hf", result.hf, "--save", result.checkpoint, "--overwrite")
    assert status == 2 and "already holds an imported tokenizer" in text, text
    assert sorted(p.name for p in result.checkpoint.iterdir()) == before


def test_a_failed_verification_writes_nothing(imported, tmp_path):
    argv = ["--hf", str(imported["llama"].hf), "--save", str(tmp_path / "out"), "--verify"]
    ((status, text),) = run_distributed(workers.import_with_a_mapping_bug, 1, args=(argv,))
    assert status == 1, text
    assert "FAILED" in text and "was not written" in text
    assert not (tmp_path / "out").exists()
