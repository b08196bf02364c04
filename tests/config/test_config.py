"""Config: flags generated from the dataclasses, YAML files, and validation naming the flag."""

from __future__ import annotations

import subprocess
import sys

import pytest

from megatron_dlm.config import ConfigError, DLMConfig, ModelConfig, ParallelConfig
from megatron_dlm.config.cli import build_parser, config_from_args, parse_config

MEGATRON_FLAGS = [
    "--num-layers",
    "--hidden-size",
    "--ffn-hidden-size",
    "--num-attention-heads",
    "--num-query-groups",
    "--kv-channels",
    "--seq-length",
    "--max-position-embeddings",
    "--position-embedding-type",
    "--rotary-base",
    "--normalization",
    "--swiglu",
    "--qk-layernorm",
    "--untie-embeddings-and-output-weights",
    "--init-method-std",
    "--attention-dropout",
    "--hidden-dropout",
    "--tensor-model-parallel-size",
    "--pipeline-model-parallel-size",
    "--expert-model-parallel-size",
    "--expert-tensor-parallel-size",
    "--context-parallel-size",
    "--sequence-parallel",
    "--num-experts",
    "--moe-router-topk",
    "--moe-ffn-hidden-size",
    "--moe-aux-loss-coeff",
    "--moe-z-loss-coeff",
    "--moe-token-dispatcher-type",
    "--moe-grouped-gemm",
    "--transformer-impl",
    "--bf16",
    "--fp16",
    "--make-vocab-size-divisible-by",
    "--disable-bias-linear",
    "--recompute-granularity",
    "--fp8-format",
]


def test_megatron_flag_names_exist_with_help_from_docstrings():
    parser = build_parser()
    options = {opt for action in parser._actions for opt in action.option_strings}
    missing = [f for f in MEGATRON_FLAGS if f not in options]
    assert not missing, f"missing Megatron flags: {missing}"
    help_text = parser.format_help()
    assert "Number of transformer layers" in help_text
    assert "--dlm-eps" in help_text and "Smallest masking ratio t" in help_text


SIZE = "--num-layers 2 --hidden-size 128 --num-attention-heads 4 --seq-length 256"
"""The model size (required): later flags override it."""


def test_flags_parse_into_typed_sections():
    cfg = parse_config(
        [
            "--seq-length",
            "256",
            "--num-layers",
            "4",
            "--hidden-size",
            "64",
            "--num-attention-heads",
            "8",
            "--num-query-groups",
            "2",
            "--no-swiglu",
            "--normalization",
            "LayerNorm",
            "--tensor-model-parallel-size",
            "2",
            "--sequence-parallel",
            "--objective",
            "ar",
            "--bf16",
            "--num-experts",
            "4",
            "--moe-router-topk",
            "1",
        ]
    )
    assert cfg.model.num_layers == 4 and cfg.model.swiglu is False
    assert cfg.model.ffn_hidden_size == 4 * 64  # GELU MLP default
    assert cfg.model.kv_channels == 8
    assert cfg.parallel.sequence_parallel and cfg.parallel.expert_tensor_parallel_size == 2
    assert cfg.objective.objective == "ar" and not cfg.objective.bidirectional
    assert cfg.precision.bf16 and cfg.model.moe_ffn_hidden_size == 256


def test_swiglu_ffn_default_is_megatron_lms():
    size = dict(num_layers=2, seq_length=64, num_attention_heads=16)
    # int(8/3 h / 64) * 64: about the parameters of a 4h GELU MLP (Megatron-LM's validate_args).
    assert ModelConfig(hidden_size=768, swiglu=True, **size).ffn_hidden_size == 2048
    assert ModelConfig(hidden_size=2048, swiglu=True, **size).ffn_hidden_size == 5440
    assert ModelConfig(hidden_size=768, **size).ffn_hidden_size == 4 * 768


def test_yaml_config_then_flags_override(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "num-layers: 6\nhidden_size: 96\nmodel:\n  num-attention-heads: 6\n  seq-length: 64\n"
        "parallel:\n  tensor-model-parallel-size: 2\nobjective: ar\n"
    )
    cfg = parse_config(["--config", str(recipe), "--num-layers", "3"])
    assert cfg.model.num_layers == 3  # the flag wins
    assert cfg.model.hidden_size == 96 and cfg.model.num_attention_heads == 6
    assert cfg.parallel.tensor_model_parallel_size == 2 and cfg.objective.objective == "ar"


@pytest.mark.parametrize(
    "text, message",
    [
        ("num-layerz: 3\n", "unknown key 'num-layerz'"),
        ("objective: diffusion\n", "--objective: invalid choice 'diffusion'"),
        ("num-layers: three\n", "--num-layers: cannot read 'three'"),
        ("- 1\n- 2\n", "must hold a mapping"),
    ],
)
def test_bad_yaml_names_the_key(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    args = build_parser().parse_args(["--config", str(recipe)])
    with pytest.raises(ConfigError, match=message):
        config_from_args(args)


def test_missing_yaml_file_is_a_clear_error(tmp_path):
    args = build_parser().parse_args(["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(ConfigError, match="--config: file not found"):
        config_from_args(args)


@pytest.mark.parametrize(
    "argv, message",
    [
        ("--num-attention-heads 6 --hidden-size 96 --tensor-model-parallel-size 4",
         r"--num-attention-heads \(6\) must be divisible by --tensor-model-parallel-size \(4\)"),
        ("--num-query-groups 2 --tensor-model-parallel-size 4",
         r"--num-query-groups \(2\) must be divisible by --tensor-model-parallel-size \(4\)"),
        ("--num-attention-heads 4 --num-query-groups 3",
         r"--num-attention-heads \(4\) must be divisible by --num-query-groups \(3\)"),
        ("--num-experts 6 --expert-model-parallel-size 4",
         r"--num-experts \(6\) must be divisible by --expert-model-parallel-size \(4\)"),
        ("--expert-model-parallel-size 2", "need --num-experts"),
        ("--seq-length 30 --tensor-model-parallel-size 4 --sequence-parallel",
         r"--seq-length \(30\) must be divisible by --tensor-model-parallel-size \(4\)"),
        ("--seq-length 30 --context-parallel-size 2 --transformer-impl transformer_engine",
         r"--seq-length \(30\) must be divisible by 2 x --context-parallel-size \(2\)"),
        ("--context-parallel-size 2 --transformer-impl local",
         "--context-parallel-size > 1 needs --transformer-impl transformer_engine"),
        ("--seq-length 40 --context-parallel-size 2 --tensor-model-parallel-size 4 "
         "--sequence-parallel --transformer-impl transformer_engine",
         r"--seq-length \(40\) must be divisible by 2 x --context-parallel-size \(2\) x "
         r"--tensor-model-parallel-size \(4\) with --sequence-parallel"),
        ("--num-layers 3 --pipeline-model-parallel-size 2",
         r"--num-layers \(3\) must be divisible by --pipeline-model-parallel-size \(2\)"),
        ("--num-layers 4 --pipeline-model-parallel-size 2 --num-virtual-stages-per-pipeline-rank 4",
         r"--num-virtual-stages-per-pipeline-rank \(4\)"),
        ("--num-experts 4 --tensor-model-parallel-size 2 --expert-model-parallel-size 2",
         "needs --sequence-parallel"),
        ("--num-experts 4 --moe-grouped-gemm --transformer-impl local",
         "--moe-grouped-gemm needs --transformer-impl transformer_engine"),
        ("--fp8-format e4m3 --bf16 --transformer-impl local",
         "--fp8-format needs --transformer-impl transformer_engine"),
        ("--fp8-format e4m3", "--fp8-format needs --bf16"),
        ("--bf16 --fp16", "mutually exclusive"),
        ("--num-experts 4 --moe-router-topk 5", r"--moe-router-topk \(5\) must be between"),
        ("--hidden-size 100 --num-attention-heads 3", r"--hidden-size \(100\) must be divisible"),
        ("--dlm-eps 0", "--dlm-eps must be in"),
        ("--num-query-groups 0", "--num-query-groups must be >= 1, got 0"),
        ("--make-vocab-size-divisible-by 0", "--make-vocab-size-divisible-by must be >= 1"),
        ("--kv-channels 0", "--kv-channels must be >= 1"),
        ("--seq-length 128 --max-position-embeddings 64",
         r"--max-position-embeddings \(64\) must be at least --seq-length \(128\)"),
        ("--position-embedding-type none --seq-length 128 --max-position-embeddings 64",
         r"--max-position-embeddings \(64\) must be at least"),
        ("--rotary-percent 0", r"--rotary-percent must be in \(0, 1\]"),
        ("--adam-beta1 1.5", r"--adam-beta1 must be in \[0, 1\), got 1.5"),
        ("--adam-beta2 -0.1", r"--adam-beta2 must be in \[0, 1\)"),
        ("--lr nan", "--lr must be a finite number, got nan"),
        ("--init-method-std inf", "--init-method-std must be a finite number"),
        ("--weight-decay -1", "--weight-decay must be >= 0"),
        ("--train-iters 0", r"--train-iters must be >= 1 \(the compute budget"),
        ("--dry-run-mfu 0", r"--dry-run-mfu must be in \(0, 1\]"),
        ("--dry-run-mfu nan", "--dry-run-mfu must be a finite number"),
        ("--dry-run-world-size -8", "--dry-run-world-size must be >= 1, got -8"),
    ],
)  # fmt: skip
def test_invalid_layouts_name_the_flags(argv, message):
    args = build_parser().parse_args(f"{SIZE} {argv}".split())
    with pytest.raises(ConfigError, match=message):
        config_from_args(args)


def test_world_size_must_fit_the_layout():
    parallel = ParallelConfig(tensor_model_parallel_size=2, pipeline_model_parallel_size=2)
    assert parallel.data_parallel_size(8) == 2
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by .* = 4"):
        parallel.data_parallel_size(6)
    moe = ParallelConfig(expert_model_parallel_size=4)
    with pytest.raises(ConfigError, match=r"--expert-model-parallel-size \(4\)"):
        moe.data_parallel_size(2)


def test_config_round_trips_through_a_dict():
    cfg = parse_config(
        [*SIZE.split(), "--num-experts", "4", "--objective", "ar", "--num-layers", "3"]
    )
    assert DLMConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_exits_2_and_names_the_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "megatron_dlm.config.cli", *SIZE.split(), "--num-layers", "3",
         "--pipeline-model-parallel-size", "2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "--num-layers (3) must be divisible by --pipeline-model-parallel-size (2)" in proc.stderr
