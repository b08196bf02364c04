"""Exports that load like their peers': AR models of a stock architecture as that transformers
class (no remote code; lm-eval's own ``hf`` backend reads them), DLMs answering ``AutoModel``
with logits and offering Dream's ``diffusion_generate``, weights in the training precision, and
tokenizers that older ``tokenizers`` releases read."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import transformers

from megatron_dlm.hf.verify import load_exported
from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import CASES, batch, cli, model_config, stock_batch
from tests.hf.stock_models import (
    ARCHITECTURES,
    TOKENIZER_SIZE,
    build_stock_model,
    write_qwen2_tokenizer,
)

TOL = dict(rtol=1e-5, atol=1e-5)


def export_cli(*argv) -> tuple[int, str]:
    return cli("convert_to_hf.py", *argv)


STOCK_AGAIN = [k for k in ARCHITECTURES if k != "qwen2"]
"""Qwen2 comes back as Qwen2 only with a Qwen2 tokenizer (below): transformers 5 loads every
model_type=qwen2 folder with its own Qwen2Tokenizer, whatever tokenizer the folder holds."""


@pytest.mark.parametrize("kind", STOCK_AGAIN)
def test_ar_export_of_a_stock_architecture_is_that_class(imported, tmp_path, kind):
    """HF -> Megatron -> HF: the stock class again, with the source model's logits."""
    source = imported[kind]
    out = tmp_path / "hf"
    status, text = export_cli("--load", source.checkpoint, "--output", out, "--verify")
    assert status == 0, text
    assert "a stock transformers class" in text
    assert f"verify against the stock {ARCHITECTURES[kind][1]}" in text and "OK" in text
    assert not list(out.glob("*.py"))
    config = json.loads((out / "config.json").read_text())
    assert "auto_map" not in config and config["architectures"] == [ARCHITECTURES[kind][1]]
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"]  # v4 readers too
    assert config["torch_dtype"] == config["dtype"] == "float32"  # trained (imported) in fp32
    model_class = getattr(transformers, ARCHITECTURES[kind][1])
    model = model_class.from_pretrained(out, dtype=torch.float32).eval()
    tokens, valid = stock_batch()
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        logits = model(input_ids=tokens, attention_mask=valid.long(), position_ids=positions).logits
    got = logits[..., :TOKENIZER_SIZE]
    torch.testing.assert_close(got[valid], source.reference[valid], **TOL)
    # And back: the export's provenance makes it the same checkpoint.
    status, text = cli("convert_hf_to_megatron.py", "--hf", out, "--save", tmp_path / "back")
    assert status == 0, text
    (back,) = run_distributed(
        workers.logits_at_layout, 1, args=([str(tmp_path / "back")], {}, tokens, valid)
    )
    torch.testing.assert_close(back[0][..., :TOKENIZER_SIZE][valid], source.reference[valid], **TOL)


def test_qwen2_comes_back_as_qwen2_with_a_qwen2_tokenizer(imported, tmp_path):
    from transformers import AutoTokenizer

    # The word-level test tokenizer: our modeling code (a stock Qwen2 folder would tokenize
    # with Qwen2Tokenizer).
    status, text = export_cli("--load", imported["qwen2"].checkpoint, "--output", tmp_path / "a")
    assert status == 0 and (tmp_path / "a" / "modeling_megatron_dlm.py").is_file(), text
    # transformers' own Qwen2Tokenizer: the stock class.
    hf = tmp_path / "qwen2"
    size = write_qwen2_tokenizer(hf)
    build_stock_model("qwen2", vocab_size=size + 4, eos_token_id=0).save_pretrained(hf)
    status, text = cli("convert_hf_to_megatron.py", "--hf", hf, "--save", tmp_path / "ckpt",
                       "--verify")  # fmt: skip
    assert status == 0 and "OK" in text, text
    out = tmp_path / "b"
    status, text = export_cli("--load", tmp_path / "ckpt", "--output", out, "--verify")
    assert status == 0 and "verify against the stock Qwen2ForCausalLM" in text, text
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert tokenizer.mask_token == "<|mask|>" and tokenizer.eos_token == "<|endoftext|>"
    source = AutoTokenizer.from_pretrained(hf)
    assert tokenizer.encode("def f(x): return 12") == source.encode("def f(x): return 12")


def test_lm_eval_hf_backend_scores_a_stock_export(imported, tmp_path):
    pytest.importorskip("accelerate", reason="lm-eval's hf backend needs accelerate")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    out = tmp_path / "hf"
    status, text = export_cli("--load", imported["qwen3"].checkpoint, "--output", out)
    assert status == 0, text
    lm = HFLM(pretrained=str(out), backend="causal", device="cpu", dtype="float32", batch_size=1)
    request = Instance("loglikelihood", doc={}, arguments=("w5 w6 w7", " w8 w9"), idx=0)
    ((logprob, _),) = lm.loglikelihood([request])
    model = load_exported(out)
    with torch.no_grad():
        logits = model(torch.tensor([[5, 6, 7, 8, 9]])).logits[0].log_softmax(-1)
    expected = (logits[2, 8] + logits[3, 9]).item()
    assert logprob == pytest.approx(expected, abs=1e-4)


def test_remote_code_flag_and_non_stock_ar_models_keep_our_code(imported, exported_ar, tmp_path):
    """--remote-code: our modeling code, verified (here with Qwen2-MoE's shared-expert gate)."""
    out = tmp_path / "hf"
    status, text = export_cli("--load", imported["qwen2_moe"].checkpoint, "--output", out,
                              "--remote-code", "--verify")  # fmt: skip
    assert status == 0, text
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["MegatronDLMForCausalLM"] and "auto_map" in config
    assert (out / "modeling_megatron_dlm.py").is_file() and config["moe_shared_expert_gate"]
    assert "verify: max |logits difference|" in text and "OK" in text
    # Learned positions, LayerNorm, GELU: no stock class fits.
    assert (exported_ar.export / "modeling_megatron_dlm.py").is_file()


def test_dlm_export_answers_automodel_with_logits(exported_dlm):
    from transformers import AutoModel, AutoModelForMaskedLM

    model = AutoModel.from_pretrained(exported_dlm.export, trust_remote_code=True).eval()
    assert type(model).__name__ == "MegatronDLMForMaskedLM"
    tokens, valid = batch()
    masked = AutoModelForMaskedLM.from_pretrained(exported_dlm.export, trust_remote_code=True)
    with torch.no_grad():
        expected = masked.eval()(tokens, valid).logits
        assert torch.equal(model(tokens).logits, masked(tokens).logits)
        torch.testing.assert_close(model(tokens, valid).logits[valid], expected[valid], **TOL)


@pytest.mark.parametrize(
    "alg, remasking",
    [("origin", "random"), ("maskgit_plus", "low_confidence"), ("topk_margin", "margin"),
     ("entropy", "entropy")],
)  # fmt: skip
def test_diffusion_generate_is_dreams_call_on_our_sampler(exported_dlm, alg, remasking):
    model = load_exported(exported_dlm.export)
    pad = workers.VOCAB.pad_id
    inputs = torch.tensor([[5, 6, 7, 8, 9], [pad, pad, pad, 10, 11]])
    mask = torch.tensor([[1] * 5, [0] * 3 + [1] * 2])
    out = model.diffusion_generate(
        inputs, attention_mask=mask, max_new_tokens=8, steps=8, alg=alg, alg_temp=0.0,
        output_history=True, return_dict_in_generate=True,
    )  # fmt: skip
    expected = model.generate(
        inputs, attention_mask=mask, max_new_tokens=8, steps=8, block_length=8,
        remasking=remasking, stop_at_eos=False, truncate_after_eos=False,
    )  # fmt: skip
    assert out.sequences.shape == (2, 13) and torch.equal(out.sequences, expected)
    assert torch.equal(out.sequences[:, :5], inputs)
    # One token committed per step (8 steps, 8 positions); the last state is the output.
    assert len(out.history) == 8 and torch.equal(out.history[-1], out.sequences)
    masked = [int((h[:, 5:] == workers.VOCAB.mask_id).sum()) for h in out.history]
    assert masked == [2 * (7 - step) for step in range(8)]
    plain = model.diffusion_generate(inputs, attention_mask=mask, max_new_tokens=8, steps=8,
                                     alg=alg)  # fmt: skip
    assert torch.equal(plain, expected)  # return_dict_in_generate=False: the tensor


def test_diffusion_generate_runs_the_megatron_sampler_and_refuses_what_it_lacks(exported_dlm):
    model = load_exported(exported_dlm.export)
    prompts = [[5, 6, 7, 8, 9]]
    options = dict(gen_length=8, steps=4, block_length=8, temperature=0.7, top_p=0.9, seed=2,
                   remasking="entropy", stop_at_eos=False, truncate_after_eos=False)  # fmt: skip
    (expected,) = run_distributed(
        workers.megatron_generate, 1, args=(str(exported_dlm.checkpoint), prompts, options)
    )
    out = model.diffusion_generate(torch.tensor(prompts), max_new_tokens=8, steps=4,
                                   temperature=0.7, top_p=0.9, alg="entropy", seed=2)  # fmt: skip
    assert out[0, 5:].tolist() == expected[0]
    with pytest.raises(ValueError, match="alg_temp > 0"):
        model.diffusion_generate(torch.tensor(prompts), max_new_tokens=8, alg_temp=0.5)
    with pytest.raises(ValueError, match="alg must be one of"):
        model.diffusion_generate(torch.tensor(prompts), max_new_tokens=8, alg="apd")
    with pytest.raises(ValueError, match="output_history needs"):
        model.diffusion_generate(torch.tensor(prompts), max_new_tokens=8, threshold=0.9,
                                 output_history=True, return_dict_in_generate=True)  # fmt: skip


def test_export_dtype_defaults_to_the_training_precision(tokenizer_json, tmp_path):
    parallel, objective, model = CASES["dlm_dense_tp2"]
    cfg = model_config(parallel, objective, **model)
    cfg["precision"]["bf16"] = True
    record = dataclasses.replace(workers.TOKENIZER, model=str(tokenizer_json))
    run_distributed(
        workers.save_perturbed_checkpoint, 2, args=(cfg, str(tmp_path / "ckpt"), record)
    )
    status, text = export_cli("--load", tmp_path / "ckpt", "--output", tmp_path / "bf16",
                              "--verify")  # fmt: skip
    assert status == 0, text
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    status, text = export_cli("--load", tmp_path / "ckpt", "--output", tmp_path / "fp16",
                              "--dtype", "fp16", "--verify")  # fmt: skip
    assert status == 0 and "rounded to float16" in text, text
    config = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert config["dtype"] == config["torch_dtype"] == "float16"


def test_bpe_tokenizers_are_written_for_old_tokenizers_releases(tmp_path):
    """Merges as "a b" strings (tokenizers < 0.20 reads no pairs); the same encoding."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from megatron_dlm.hf.tokenizer_export import write_portable

    text = Path(json.__file__).read_text()
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "</s>"])
    tokenizer.train_from_iterator([text], trainer)
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    assert isinstance(json.loads(path.read_text())["model"]["merges"][0], list)
    assert write_portable(path)
    merges = json.loads(path.read_text())["model"]["merges"]
    assert isinstance(merges[0], str) and len(merges[0].split(" ")) == 2
    sample = "def dumps(obj, *, skipkeys=False):\n    return x"
    assert Tokenizer.from_file(str(path)).encode(sample).ids == tokenizer.encode(sample).ids
    assert not write_portable(path)  # already portable


OLD_PYTHON = os.environ.get("MEGATRON_DLM_OLD_TRANSFORMERS_PYTHON")
OLD_SCRIPT = r"""
import json, sys
for name in ("megatron_dlm", "megatron", "tests"):
    sys.modules[name] = None  # the exported folders must not need them
import torch, transformers
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
dlm, ar = sys.argv[1:3]
out = {"version": transformers.__version__}
tok = AutoTokenizer.from_pretrained(dlm)
ids = tok("w5 w6 w7 w8", return_tensors="pt").input_ids
model = AutoModel.from_pretrained(dlm, trust_remote_code=True).eval()
with torch.no_grad():
    out["dlm_logits"] = model(ids).logits.tolist()
out["dlm_class"] = type(model).__name__
out["diffusion"] = model.diffusion_generate(ids, max_new_tokens=8, steps=8, alg="entropy").tolist()
tok = AutoTokenizer.from_pretrained(ar)
ids = tok("w5 w6 w7 w8", return_tensors="pt").input_ids
model = AutoModelForCausalLM.from_pretrained(ar).eval()
with torch.no_grad():
    out["ar_logits"] = model(ids).logits.tolist()
out["ar_class"] = type(model).__name__
print("RESULT" + json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.skipif(not OLD_PYTHON, reason="set MEGATRON_DLM_OLD_TRANSFORMERS_PYTHON to the "
                    "python of a venv with transformers 4.38 (LLaDA's pin)")  # fmt: skip
def test_exports_load_under_the_oldest_supported_transformers(exported_dlm, imported, tmp_path):
    ar = tmp_path / "llama"
    status, text = export_cli("--load", imported["llama"].checkpoint, "--output", ar)
    assert status == 0, text
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH="",
               HF_MODULES_CACHE=str(tmp_path / "modules"))  # fmt: skip
    argv = [OLD_PYTHON, "-c", OLD_SCRIPT, str(exported_dlm.export), str(ar)]
    proc = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert got["version"].startswith("4.") and got["dlm_class"] == "MegatronDLMForMaskedLM"
    ids = torch.tensor([[5, 6, 7, 8]])
    dlm = load_exported(exported_dlm.export)
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(got["dlm_logits"]), dlm(ids).logits, **TOL)
        expected = dlm.diffusion_generate(ids, max_new_tokens=8, steps=8, alg="entropy")
        assert got["diffusion"] == expected.tolist()
        torch.testing.assert_close(torch.tensor(got["ar_logits"]), load_exported(ar)(ids).logits,
                                   **TOL)  # fmt: skip
    assert got["ar_class"] == "LlamaForCausalLM"
