"""Evaluation as users run it: export a trained checkpoint, lm-eval on the offline tasks,
the CLI wrappers (tools/evaluate.py, tools/generate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dlm.testing import run_distributed
from tests.eval import workers

REPO = Path(__file__).resolve().parents[2]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")  # fmt: skip


def test_simple_evaluate_on_the_offline_tasks(trained):
    (results,) = run_distributed(
        workers.simple_evaluate_worker,
        1,
        args=(str(trained / "hf"), ["python_nextline_mc", "humaneval_offline"], 4),
    )
    assert 0.0 <= results["python_nextline_mc"]["acc,none"] <= 1.0
    assert 0.0 <= results["humaneval_offline"]["pass@1,none"] <= 1.0


def test_megatron_checkpoint_evaluates_directly(trained):
    (results,) = run_distributed(
        workers.simple_evaluate_worker, 1, args=(str(trained / "ckpt"), ["python_nextline_mc"], 4)
    )
    assert 0.0 <= results["python_nextline_mc"]["acc,none"] <= 1.0


def test_evaluate_cli_converts_a_checkpoint_first(trained, tmp_path):
    proc = subprocess.run(
        [sys.executable, "tools/evaluate.py", "--load", str(trained / "ckpt"),
         "--convert-to", str(tmp_path / "hf"), "--model_args", "mc_num=4",
         "--tasks", "python_nextline_mc", "--limit", "3", "--output_path", str(tmp_path / "out")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "hf" / "config.json").is_file()
    results = list((tmp_path / "out").rglob("results*.json"))
    assert results and "python_nextline_mc" in json.loads(results[0].read_text())["results"]


def test_generate_cli_writes_jsonl(trained, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\\n\nimport sys\n")
    out = tmp_path / "samples.jsonl"
    proc = subprocess.run(
        [sys.executable, "tools/generate.py", "--load", str(trained / "ckpt"),
         "--prompts-file", str(prompts), "--gen-length", "16", "--block-length", "8",
         "--steps", "16", "--threshold", "0.5", "--output", str(out)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in records] == ["def add(a, b):\n", "import sys"]
    for record in records:
        assert {"text", "num_tokens", "forward_passes", "steps", "seconds"} <= set(record)
        assert 1 <= record["forward_passes"] <= 16
    bad = subprocess.run(
        [sys.executable, "tools/generate.py", "--load", str(trained / "ckpt"),
         "--prompts-file", str(tmp_path / "missing.txt")],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode != 0 and "--prompts-file: file not found" in bad.stderr


def _eval_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """The installed ``megatron-dlm-eval`` console script."""
    script = Path(sys.executable).parent / "megatron-dlm-eval"
    return subprocess.run([str(script), *args], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def test_console_script_is_lm_eval_with_the_model_registered(trained, tmp_path):
    out = tmp_path / "out"
    proc = _eval_cli("run", "--load", str(trained / "ckpt"), "--model_args", "mc_num=4",
                     "cache=dual", "--tasks", "python_nextline_mc", "--limit", "3",
                     "--apply_chat_template", "--log_samples",
                     "--output_path", str(out))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = [p for p in out.rglob("results*.json")]
    data = json.loads(results.read_text())
    assert data["results"]["python_nextline_mc"]["acc,none"] is not None
    assert data["config"]["model_args"]["pretrained"] == str(trained / "ckpt")
    (samples,) = [p for p in out.rglob("samples_python_nextline_mc*.jsonl")]
    first = json.loads(samples.read_text().splitlines()[0])
    assert first["arguments"]["gen_args_0"]["arg_0"].endswith("\n\n")  # the chat template ran


def _one_line_errors(cases) -> None:
    for args, message in cases:
        proc = _eval_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_console_script_errors_are_one_line(trained):
    ckpt = str(trained / "ckpt")
    _one_line_errors([
        (["--model", "megatron_dlm", "--model_args", f"pretrained={ckpt},mc_nm=3", "--tasks",
          "python_nextline_mc"], "unknown model_args mc_nm"),
        (["--convert-to", "x", "--tasks", "python_nextline_mc"], "--convert-to needs --load"),
    ])  # fmt: skip


@pytest.mark.slow
def test_console_script_errors_for_tasks_and_models(trained):
    _one_line_errors([
        (["--load", str(trained / "ckpt"), "--tasks", "no_such_task"], "no_such_task"),
        (["--load", str(trained / "missing"), "--tasks", "python_nextline_mc"],
         "no such directory"),
    ])  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_replicas_write_the_results_of_one_process(trained, tmp_path):
    common = ["--load", str(trained / "ckpt"), "--model_args", "mc_num=4", "--tasks",
              "python_nextline_mc", "--limit", "6"]  # fmt: skip
    alone = _eval_cli(*common, "--output_path", str(tmp_path / "one"))
    assert alone.returncode == 0, alone.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node=2", "-m", "megatron_dlm.eval.cli"]  # fmt: skip
    split = subprocess.run([*torchrun, *common, "--output_path", str(tmp_path / "two")],
                           cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600,
                           check=False)  # fmt: skip
    assert split.returncode == 0, split.stderr[-3000:]
    (one,) = list((tmp_path / "one").rglob("results*.json"))
    (two,) = list((tmp_path / "two").rglob("results*.json"))  # written once, by rank 0
    one, two = (json.loads(p.read_text())["results"]["python_nextline_mc"] for p in (one, two))
    assert two["acc,none"] == one["acc,none"] and two["acc_norm,none"] == one["acc_norm,none"]
