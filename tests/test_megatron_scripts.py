"""Megatron-LM's and MegaDLMs' own launch scripts, paths changed only, size their model here.

tests/data/megatron_scripts/ holds the scripts (README there: sources, what changed, the
hand-computed parameter counts). Each runs as its users run it and ends in
``pretrain_dlm.py ... --dry-run``; the report must give the parameter count of the model the
script describes. This needs pretrain_dlm.py to accept Megatron-LM's whole flag set with its
meanings (``--vocab-size``, ``--mock-data``, ``--group-query-attention``, LayerNorm and biases
by default, ``--sequence-parallel`` ignored at TP 1, ...), its tokenizer types (GPT2BPETokenizer
with ``--vocab-file/--merge-file``, NullTokenizer, Llama2Tokenizer, HuggingFaceTokenizer with
``--mask-token``), and the dry run to size the vocabulary from the tokenizer (NullTokenizer's
``--vocab-size`` ids plus its end of document and the appended mask and padding), or, when the
tokenizer's files are not on this machine, from ``--vocab-size`` / ``--dry-run-vocab-size``.
Nothing in the scripts' command lines is rewritten.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "tests" / "data" / "megatron_scripts"

# script -> (positional arguments, environment, extra dry-run flags, total parameters)
CASES = {
    "dlm_pretrain_1.7b.sh": (
        [], dict(GPUS_PER_NODE="8", NUM_NODES="8", NODE_RANK="0", MASTER_ADDR="localhost",
                 MASTER_PORT="6000", DATASETS_DIR="{tmp}/datasets", CKPT_DIR="{tmp}/ckpt",
                 PROJECT_DIR="{tmp}", MICRO_BATCH_SIZE="4"),
        "", 1_732_895_744,
    ),
    "train_gpt3_175b_distributed.sh": (
        ["{tmp}/ckpt", "{tmp}/tb", "{tmp}/gpt2-vocab.json", "{tmp}/gpt2-merges.txt",
         "{tmp}/data_text_document"],
        {}, "--dry-run-world-size 128 --dry-run-vocab-size 50257", 174_615_846_912,
    ),
    "train_llama3_8b_h100_fp8.sh": ([], {}, "", 8_031_576_064),
    "train_mixtral_8x7b_distributed.sh": (
        ["{tmp}/ckpt", "{tmp}/tokenizer.model", "{tmp}/data_text_document"],
        dict(SLURM_NNODES="4"), "--dry-run-vocab-size 32000", 46_702_792_704,
    ),
}  # fmt: skip


def _run(
    script: str, tmp_path: Path, python: str, dry_run_args: str | None = None
) -> subprocess.CompletedProcess:
    args, env, case_dry_run_args, _ = CASES[script]
    dry_run_args = case_dry_run_args if dry_run_args is None else dry_run_args
    fill = {"tmp": str(tmp_path)}
    full_env = {
        **os.environ,
        **{k: v.format(**fill) for k, v in env.items()},
        "PYTHON": python,
        "MEGATRON_DLM_ROOT": str(REPO),
        "DRY_RUN_ARGS": dry_run_args,
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *(a.format(**fill) for a in args)],
        cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("script", CASES)
def test_megatron_script_dry_runs_and_reports_its_model(script, tmp_path):
    proc = _run(script, tmp_path, sys.executable)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "unrecognized" not in proc.stderr
    match = re.search(r"parameters\s+: ([0-9.]+) B total", proc.stdout)
    assert match, proc.stdout
    expected = CASES[script][3]
    assert float(match.group(1)) == pytest.approx(expected / 1e9, abs=0.0005)


def test_megadlms_launcher_counts_exactly_the_hand_computed_parameters(tmp_path):
    """The MegaDLMs 1.7B script's flags, resolved in-process: 1,732,895,744 parameters."""
    from megatron_dlm.config.cli import parse_config
    from megatron_dlm.training.dry_run import dry_run

    recorder = tmp_path / "python"
    record = tmp_path / "argv.json"
    recorder.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv[2:], open({str(record)!r}, 'w'))\n"
    )
    recorder.chmod(0o755)
    proc = _run("dlm_pretrain_1.7b.sh", tmp_path, str(recorder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = parse_config(json.loads(record.read_text()))
    # The script's meaning, as Megatron-LM/MegaDLMs read it.
    assert cfg.objective.objective == "dlm"  # --model-running-mode difflm-noshift
    assert (cfg.model.normalization, cfg.model.swiglu, cfg.model.disable_bias_linear) == (
        "RMSNorm", True, True
    )  # fmt: skip
    assert cfg.model.num_query_groups == 16  # no --group-query-attention: multi-head
    assert (cfg.optimizer.lr_decay_style, cfg.optimizer.lr_wsd_decay_iters) == ("WSD", 1000)
    assert cfg.parallel.num_distributed_optimizer_instances == 8
    report = dry_run(cfg)
    assert report.padded_vocab == 50_304  # --vocab-size 50289 padded to a multiple of 128
    assert report.vocab_source == "from --vocab-size 50289: no tokenizer files here"
    assert report.total_params == 1_732_895_744


def test_mixtral_script_sizes_its_vocabulary_from_a_llama2_tokenizer_model(tmp_path):
    """With the script's ``tokenizer.model`` on this machine (a Llama-2-style sentencepiece model,
    ``--tokenizer-type Llama2Tokenizer``), the dry run builds the tokenizer: its pieces plus the
    appended mask and padding, padded as Megatron-LM pads; no --dry-run-vocab-size needed."""
    from megatron_dlm.models.vocab import padded_vocab_size
    from tests.data import tokenizer_kinds as kinds

    model = kinds.write_llama2(tmp_path / "llama2", kinds.corpus(20))
    (tmp_path / "tokenizer.model").write_bytes(model.read_bytes())
    script = "train_mixtral_8x7b_distributed.sh"
    proc = _run(script, tmp_path, sys.executable, dry_run_args="")
    total = CASES[script][3]
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = re.search(r"vocabulary\s+: ([0-9,]+) \(padded; (.*)\)", proc.stdout)
    assert line, proc.stdout
    assert line.group(2) == "Llama2Tokenizer: 602 ids, <|mask|>, <|pad|> appended"
    padded = int(line.group(1).replace(",", ""))
    assert padded == padded_vocab_size(602, 128, 1)
    params = re.search(r"parameters\s+: ([0-9.]+) B total", proc.stdout)
    # the script's model with this vocabulary: 2 x (32,000 - padded) x 4096 fewer parameters
    assert float(params.group(1)) == pytest.approx((total - 2 * 4096 * (32_000 - padded)) / 1e9,
                                                   abs=0.0005)  # fmt: skip
