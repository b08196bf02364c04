"""tools/convert_to_hf.py: verification that can fail, atomic output, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

from megatron_dlm.hf.verify import load_exported
from megatron_dlm.testing import run_distributed
from tests.hf import workers
from tests.hf.conftest import batch, write_tokenizer_json


def cli(*argv) -> tuple[int, str]:
    (result,) = run_distributed(workers.run_cli, 1, args=([str(a) for a in argv],))
    return result


def test_verify_passes_and_publishes(exported_dlm, tmp_path):
    out = tmp_path / "hf"
    status, text = cli("--load", exported_dlm.checkpoint, "--output", out, "--verify")
    assert status == 0, text
    assert "verify: max |logits difference|" in text and "OK" in text
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folder left


def test_verify_fails_on_a_wrong_mapping_and_writes_nothing(exported_dlm, tmp_path):
    out = tmp_path / "hf"
    argv = ["--load", str(exported_dlm.checkpoint), "--output", str(out), "--verify"]
    (result,) = run_distributed(workers.run_cli_with_swapped_gate_up, 1, args=(argv,))
    status, text = result
    assert status == 1, text
    assert "FAILED" in text and "was not written" in text
    assert list(tmp_path.iterdir()) == []


def test_verify_only_detects_edited_weights(exported_dlm, tmp_path):
    out = tmp_path / "hf"
    shutil.copytree(exported_dlm.export, out)
    status, text = cli("--load", exported_dlm.checkpoint, "--output", out, "--verify-only")
    assert status == 0, text
    tensors = load_file(out / "model.safetensors")
    name = "model.layers.1.self_attn.v_proj.weight"
    tensors[name] = tensors[name].flip(0).contiguous()  # permuted rows: a mapping bug
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    status, text = cli("--load", exported_dlm.checkpoint, "--output", out, "--verify-only")
    assert status == 1, text
    assert "FAILED" in text


def test_bfloat16_and_sharded_export(exported_dlm, tmp_path):
    out = tmp_path / "hf"
    status, text = cli(
        "--load", exported_dlm.checkpoint, "--output", out, "--verify",
        "--dtype", "bfloat16", "--max-shard-size", "20KB",
    )  # fmt: skip
    assert status == 0, text
    assert "rounded to bfloat16" in text
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    model = load_exported(out)  # float32 compute from bf16 weights
    reference = load_exported(exported_dlm.export)
    tokens, valid = batch()
    with torch.no_grad():
        diff = (model(tokens, valid).logits - reference(tokens, valid).logits)[valid].abs().max()
    assert 0 < diff < 0.5


def test_bad_inputs(exported_dlm, tmp_path):
    ckpt = exported_dlm.checkpoint
    status, text = cli("--load", tmp_path / "missing", "--output", tmp_path / "a")
    assert status == 2 and "no such directory" in text, text

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    status, text = cli("--load", ckpt, "--output", tmp_path / "full")
    assert status == 2 and "already exists and is not empty" in text, text
    assert (tmp_path / "full" / "keep.txt").read_text() == "x"

    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "latest_checkpointed_iteration.txt").write_text("123\n")
    status, text = cli("--load", broken, "--output", tmp_path / "b")
    assert status == 2 and "iter_0000123" in text and "missing or incomplete" in text, text

    corrupt = tmp_path / "corrupt"
    shutil.copytree(ckpt, corrupt)
    for shard in (corrupt / "iter_0000007").glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])
    status, text = cli("--load", corrupt, "--output", tmp_path / "c")
    assert status == 2 and "the checkpoint is damaged" in text and "truncated" in text, text

    other = write_tokenizer_json(tmp_path / "small" / "tokenizer.json")
    data = json.loads(other.read_text())
    del data["model"]["vocab"]["w50"]
    other.write_text(json.dumps(data))
    status, text = cli("--load", ckpt, "--output", tmp_path / "d", "--tokenizer-model", other)
    assert status == 2 and "cannot export the tokenizer" in text and "tokenizer.json" in text, text

    status, text = cli("--load", ckpt, "--output", tmp_path, "--verify-only")
    assert status == 2 and "not an exported folder" in text, text
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_command_line_exit_status(tmp_path):
    """The script itself (a fresh interpreter): usage errors and bad input exit non-zero."""
    script = str(workers.ROOT / "tools/convert_to_hf.py")
    env = dict(os.environ, PYTHONPATH=str(workers.ROOT))  # this checkout's megatron_dlm
    proc = subprocess.run([sys.executable, script, "--output", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 2 and "--load" in proc.stderr
    proc = subprocess.run(
        [sys.executable, script, "--load", str(tmp_path / "nope"), "--output", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "error:" in proc.stderr and "no such directory" in proc.stderr
