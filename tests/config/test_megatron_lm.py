"""Megatron-LM's option set and defaults (issue 12 items 1-2; docs/megatron-lm.md).

The reference is Megatron-LM's own parser (core_v0.16.1, ``megatron_dlm/config/
megatron_lm_flags.tsv``) and megatron-core's own config dataclasses (TransformerConfig,
OptimizerConfig, DistributedDataParallelConfig), read here, not copied.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from megatron_dlm.config import SECTIONS, ConfigError, DLMConfig, ModelConfig
from megatron_dlm.config.base import flag
from megatron_dlm.config.cli import build_parser, parse_config
from megatron_dlm.config.megatron_lm import INERT, MEGADLMS_INERT, megatron_lm_flags

REPO = Path(__file__).resolve().parents[2]
SIZE = ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
        "--seq-length", "64"]  # fmt: skip

DEFAULT_EXCEPTIONS = {
    "num_query_groups": "Megatron-LM's 1 applies only with --group-query-attention; here the "
    "default is one group per head (multi-head), as Megatron-LM without the flag",
    "max_position_embeddings": "Megatron-LM requires it; here it defaults to --seq-length",
    "transformer_impl": "'auto': Transformer Engine on a GPU, the local layers on a CPU",
    "distributed_backend": "'auto': NCCL with CUDA, gloo on a CPU",
    "micro_batch_size": "Megatron-LM has no default (None fails); 4 here",
    "lr": "Megatron-LM has no default (None fails); 3e-4 here",
    "split": "Megatron-LM's None means its legacy '969, 30, 1' with --data-path: the same",
    "tokenizer_type": "Megatron-LM requires it; tokenizers are issue 12 item 3",
}
"""Our field -> why its default is not Megatron-LM's (docs/megatron-lm.md lists them too)."""

MCORE_DEFAULT_DIFFERS = {
    "attention_softmax_in_fp32": "TransformerConfig's True; Megatron-LM's parser passes False",
    "transformer_impl": "see DEFAULT_EXCEPTIONS",
    "masked_softmax_fusion": "TransformerConfig's False; Megatron-LM's parser passes True",
    "bias_dropout_fusion": "TransformerConfig's False; Megatron-LM's parser passes True",
    "apply_rope_fusion": "TransformerConfig's False; Megatron-LM's parser passes True",
    "gradient_accumulation_fusion": "TransformerConfig's False; Megatron-LM's parser: True",
    "persist_layer_norm": "TransformerConfig's False; Megatron-LM: on unless --no-persist-...",
    "lr": "OptimizerConfig's None; see DEFAULT_EXCEPTIONS",
    "min_lr": "OptimizerConfig's None; Megatron-LM's parser passes 0.0",
    "num_layers": "required (TransformerConfig's 0 is no model)",
    "hidden_size": "required (TransformerConfig's 0 is no model)",
    "num_attention_heads": "required (TransformerConfig's 0 is no model)",
    "ffn_hidden_size": "derived from --hidden-size (TransformerConfig: 4h too)",
    "kv_channels": "derived from --hidden-size (TransformerConfig: h / heads too)",
    "num_query_groups": "derived: one per head (TransformerConfig: the same)",
    "expert_tensor_parallel_size": "derived: --tensor-model-parallel-size (as megatron-core)",
    "moe_ffn_hidden_size": "derived: --ffn-hidden-size (as megatron-core)",
    "initial_loss_scale": "the same number (2**32) as a float",
    "fp8_recipe": "passed to OptimizerConfig only with --fp8-format (its None: no FP8)",
    "num_virtual_stages_per_pipeline_rank": "the same None",
}
"""Our field -> why megatron-core's dataclass default differs (Megatron-LM's parser decides)."""


def _literal(text: str):
    if text.startswith("<") and "." in text:  # an enum member's repr: <AttnBackend.auto: 5>
        return text[1:].split(".", 1)[1].split(":")[0]
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _default(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return f.default


def _our_fields():
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            yield f, f.metadata.get("flag", flag(f.name))


def test_each_default_that_megatron_lm_defines_is_megatron_lms():
    meg = megatron_lm_flags()
    compared, wrong = 0, []
    for f, option in _our_fields():
        if f.name in DEFAULT_EXCEPTIONS:
            continue
        ours = _default(f)
        if option in meg and meg[option].dest == f.name:
            theirs = _literal(meg[option].default)
            if isinstance(ours, bool) and theirs is None:
                theirs = False  # Megatron-LM's store_true with default None
        elif option in meg and meg[option].is_switch:
            # The same switch under another dest (--disable-bias-linear -> add_bias_linear):
            # not given by default, in both.
            theirs = False
        elif f"--no-{option[2:]}" in meg:  # Megatron-LM only has --no-X: on by default
            negated = meg[f"--no-{option[2:]}"]
            theirs = _literal(negated.default)
            if negated.dest.startswith("no_"):  # --no-persist-layer-norm -> no_persist_...
                theirs = not theirs
        else:
            continue
        compared += 1
        if isinstance(theirs, (int, float)) and not isinstance(theirs, bool):
            same = ours is not None and float(ours) == float(theirs)
        else:
            same = ours == theirs
        if not same:
            wrong.append(f"{option}: ours {ours!r}, Megatron-LM {theirs!r}")
    assert not wrong, "defaults differ from Megatron-LM's:\n" + "\n".join(wrong)
    assert compared > 100


def test_defaults_passed_to_megatron_core_are_its_own_or_megatron_lms():
    """Where a field reaches megatron-core's config dataclasses, our default is megatron-core's
    own, except where Megatron-LM's parser passes another (listed with the reason)."""
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.optimizer import OptimizerConfig
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_dlm.models.provider import TRANSFORMER_CONFIG_RENAMES
    from megatron_dlm.training.model_setup import DDP_CONFIG_RENAMES

    targets = [
        (TransformerConfig, TRANSFORMER_CONFIG_RENAMES, ("model", "parallel", "precision")),
        (OptimizerConfig, {}, ("optimizer", "precision")),
        (DistributedDataParallelConfig, DDP_CONFIG_RENAMES, ("optimizer", "parallel", "precision")),
    ]
    checked, wrong = 0, []
    for target, renames, sections in targets:
        theirs = {f.name: _default(f) for f in dataclasses.fields(target)}
        for section in sections:
            for f in dataclasses.fields(SECTIONS[section]):
                name = renames.get(f.name, f.name)
                if name not in theirs or f.name in MCORE_DEFAULT_DIFFERS:
                    continue
                checked += 1
                mine, core = _default(f), theirs[name]
                if hasattr(core, "name") and not isinstance(core, (str, int)):
                    core = core.name
                if mine != core:
                    wrong.append(f"{target.__name__}.{name}: ours {mine!r}, megatron-core {core!r}")
    assert not wrong, "\n".join(wrong)
    assert checked > 40


def test_every_megatron_lm_option_is_known_to_the_parser():
    """Never argparse's "unrecognized arguments": each option is ours, inert or refused."""
    parser = build_parser()
    options = parser._option_string_actions
    assert not [o for o in megatron_lm_flags() if o not in options]
    inert = [o for o in megatron_lm_flags() if type(options[o]).__name__ == "_Inert"]
    assert sorted(inert) == sorted(INERT)


@pytest.mark.parametrize(
    "argv, reason",
    [
        (["--use-legacy-models"], "only megatron-core models exist here"),
        (["--mtp-num-layers", "2"], "no counterpart in Megatron-DLM"),
        (["--ckpt-format", "torch"], "invalid choice 'torch'"),
        (["--base-model", "Qwen_2"], "invalid choice 'Qwen_2'"),
    ],
)
def test_unsupported_megatron_lm_options_exit_2_naming_them(argv, reason, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config([*SIZE, *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err and reason in err
    assert "unrecognized" not in err


def test_inert_options_change_nothing():
    plain = parse_config(SIZE)
    inert = [
        "--use-mcore-models", "--no-position-embedding", "--rerun-mode", "validate_results",
        "--log-throughput", "--log-params-norm", "--manual-gc", "--empty-unused-memory-level",
        "1", "--non-persistent-save-interval", "100", "--non-persistent-ckpt-type", "global",
        "--profile", "--profile-step-start", "4", "--cross-entropy-loss-fusion",
        "--calculate-per-token-loss", "--wandb-mode", "offline", "--wandb-tags", "a", "b",
        "--auto-detect-ckpt-format", "--ckpt-fully-parallel-load",
    ]  # fmt: skip
    assert parse_config([*SIZE, *inert]) == plain


def test_inert_table_is_documented():
    doc = (REPO / "docs" / "megatron-lm.md").read_text()
    missing = [o for o in [*INERT, *MEGADLMS_INERT] if f"`{o}`" not in doc]
    assert not missing, f"docs/megatron-lm.md does not list {missing}"
    for field_name in DEFAULT_EXCEPTIONS:
        assert f"`{flag(field_name)}`" in doc, flag(field_name)


def test_model_size_is_required_naming_the_missing_flags(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--num-layers", "2", "--seq-length", "64"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "give --hidden-size, --num-attention-heads" in err and "--num-layers," not in err
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  num-layers: 2\n  hidden-size: 64\n  num-attention-heads: 4\n"
                      "  seq-length: 64\n")  # fmt: skip
    assert parse_config(["--config", str(recipe)]).model.hidden_size == 64


def test_megatron_lm_meanings():
    cfg = parse_config(
        [*SIZE, "--group-query-attention", "--sequence-parallel", "--apply-layernorm-1p",
         "--transformer-impl", "transformer_engine", "--no-masked-softmax-fusion",
         "--train-samples", "1000", "--global-batch-size", "8", "--micro-batch-size", "4"]
    )  # fmt: skip
    assert cfg.model.num_query_groups == 1  # --group-query-attention alone: Megatron-LM's 1
    assert not cfg.parallel.sequence_parallel  # turned off at TP 1, as in Megatron-LM
    assert cfg.model.normalization == "LayerNorm" and not cfg.model.swiglu
    assert cfg.model.hidden_dropout == 0.1 and cfg.model.position_embedding_type == (
        "learned_absolute"
    )
    assert (cfg.optimizer.adam_beta2, cfg.optimizer.lr_decay_style) == (0.999, "linear")
    assert (cfg.precision.fp8_amax_history_len, cfg.precision.fp8_amax_compute_algo) == (
        1, "most_recent"
    )  # fmt: skip
    assert cfg.training.check_for_nan_in_loss_and_grad and not cfg.training.skip_nan_steps
    from megatron_dlm.training.batching import resolve_batch_layout

    assert resolve_batch_layout(cfg, 1).train_iters == 125  # ceil(1000 samples / 8)
    mha = parse_config([*SIZE, "--num-query-groups", "4"])
    assert not mha.model.group_query_attention and mha.model.num_query_groups == 4


def test_samples_flags_become_steps():
    from megatron_dlm.training.optimizer import schedule_steps

    cfg = parse_config(
        [*SIZE, "--global-batch-size", "16", "--micro-batch-size", "4", "--train-iters", "100",
         "--lr-decay-style", "WSD", "--lr-warmup-samples", "160", "--lr-decay-samples", "1280",
         "--lr-wsd-decay-samples", "320"]
    )  # fmt: skip
    steps = schedule_steps(cfg, 100, 16)
    assert (steps.warmup, steps.decay, steps.wsd_decay) == (10, 80, 20)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model-running-mode", "vanilla", "--objective", "dlm"],
         "--model-running-mode vanilla means --objective ar"),
        (["--attention-mask-type", "causal"], "--attention-mask-type causal needs --objective ar"),
        (["--train-iters", "3", "--train-samples", "30"], "give one compute budget"),
        (["--num-distributed-optimizer-instances", "2"], "needs --use-distributed-optimizer"),
        (["--fp8-param-gather", "--bf16"], "--fp8-param-gather needs --fp8-format"),
        (["--apply-layernorm-1p", "--transformer-impl", "local"],
         "--apply-layernorm-1p needs --transformer-impl transformer_engine"),
    ],
)  # fmt: skip
def test_megatron_lm_and_megadlms_options_checked(argv, message):
    args = build_parser().parse_args([*SIZE, *argv])
    from megatron_dlm.config.cli import config_from_args

    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_args(args)


def test_megadlms_running_mode_sets_the_objective():
    assert parse_config([*SIZE, "--model-running-mode", "vanilla"]).objective.objective == "ar"
    cfg = parse_config([*SIZE, "--model-running-mode", "difflm-noshift", "--attention-mask-type",
                        "no_mask", "--base-model", "vanilla"])  # fmt: skip
    assert cfg.objective.objective == "dlm"


def test_transformer_config_takes_the_fields_by_name():
    from megatron_dlm.models.provider import transformer_config

    cfg = parse_config(
        [*SIZE, "--attention-softmax-in-fp32", "--hidden-dropout", "0.2", "--norm-epsilon",
         "1e-6", "--swiglu", "--qk-layernorm", "--transformer-impl", "local"]
    )  # fmt: skip
    tc = transformer_config(cfg)
    assert tc.attention_softmax_in_fp32 and tc.hidden_dropout == 0.2 and tc.qk_layernorm
    assert tc.layernorm_epsilon == 1e-6 and tc.gated_linear_unit and tc.add_bias_linear
    assert tc.normalization == "LayerNorm" and tc.transformer_impl == "local"
    assert not tc.masked_softmax_fusion  # the local layers have no fused kernels


def test_a_renamed_megatron_core_field_fails_loudly():
    from megatron_dlm.config.translate import matching_fields

    @dataclasses.dataclass
    class Target:
        hidden_size: int = 0

    model = ModelConfig(num_layers=1, hidden_size=8, num_attention_heads=2, seq_length=4)
    assert matching_fields(Target, [model]) == {"hidden_size": 8}
    with pytest.raises(TypeError, match="Target has no field"):
        matching_fields(Target, [model], renames={"norm_epsilon": "layernorm_epsilon"})


def test_dry_run_only_options_are_refused_for_training(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "pretrain_dlm.py"), *SIZE, "--train-iters", "1",
         "--save", str(tmp_path / "run"), "--rampup-batch-size", "16", "16", "1000"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--rampup-batch-size: batch-size ramp-up is not implemented" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
    from megatron_dlm.training.preflight import refuse_dry_run_only_flags

    ramp = parse_config([*SIZE, "--rampup-batch-size", "16", "16", "1000", "--dry-run"])
    with pytest.raises(ConfigError, match="--rampup-batch-size: batch-size ramp-up is not"):
        refuse_dry_run_only_flags(ramp)
    two = ["--use-distributed-optimizer", "--num-distributed-optimizer-instances", "2"]
    refuse_dry_run_only_flags(parse_config([*SIZE, *two]))  # trains (tests/training)


def test_round_trip_keeps_the_new_fields():
    cfg = parse_config([*SIZE, "--group-query-attention", "--num-query-groups", "2"])
    assert DLMConfig.from_dict(cfg.to_dict()) == cfg
