"""Checks of a run's inputs that need no process group, made on every rank before it starts.

A wrong flag or file should fail in seconds with one message, not after the process group,
the model and the optimizer exist, and the same way on every rank, so that no rank waits in a
collective for one that has stopped. :func:`preflight` checks, cheapest first:

1. the layout against the world size (``WORLD_SIZE``, as torchrun sets it) and the batch sizes
   (``--global-batch-size`` divisible by ``--micro-batch-size`` x data-parallel size), and the
   compute budget;
2. the output folders (``--save``, the run directory): not a file, not below a file, writable;
   ``--load`` exists when it is not ``--save``;
3. the tokenizer loads and has the special tokens;
4. the datasets exist, are intact, fit the tokenizer and hold the budget (what
   :func:`megatron_dlm.data.datasets.check_datasets` checks).

``--eval-tasks`` needs one pipeline stage, no context or expert parallelism and no sequence
parallelism (:func:`check_eval_tasks_layout`); its task names are checked by the caller that
injects the evaluator (``pretrain_dlm.py``: training does not import lm-eval).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from megatron_dlm.config import ConfigError, DLMConfig
from megatron_dlm.data.datasets import check_datasets
from megatron_dlm.data.paths import check_output_dir
from megatron_dlm.data.plan import DatasetInfo
from megatron_dlm.data.tokenizer import DLMTokenizer, build_tokenizer
from megatron_dlm.training.batching import BatchLayout, resolve_batch_layout


@dataclass(frozen=True)
class CheckedRun:
    """What :func:`preflight` established; the run reuses the tokenizer (the dataset checks
    run again inside ``build_datasets``: a few numpy reads)."""

    world_size: int
    layout: BatchLayout
    tokenizer: DLMTokenizer
    datasets: DatasetInfo


def run_directory(cfg: DLMConfig) -> Path:
    """Where a run writes ``config.json`` and ``metrics.jsonl``: --log-dir, else --save, else
    ``runs/<--wandb-exp-name or 'run'>``."""
    log = cfg.logging
    if log.log_dir:
        return Path(log.log_dir)
    if cfg.checkpoint.save:
        return Path(cfg.checkpoint.save)
    return Path("runs") / (log.wandb_exp_name or "run")


def world_size_from_env() -> int:
    """The world size torchrun (or a scheduler) announces; 1 outside a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_eval_tasks_layout(cfg: DLMConfig) -> None:
    """``--eval-tasks`` runs the live model as the inference path does: one pipeline stage,
    whole sequences on every rank of a tensor-parallel group, experts on every rank.

    Raises:
        ConfigError: naming --eval-tasks and the flag it cannot be combined with.
    """
    if not cfg.training.eval_tasks:
        return
    parallel = cfg.parallel
    refused = [
        (parallel.pipeline_model_parallel_size > 1, "--pipeline-model-parallel-size > 1"),
        (parallel.context_parallel_size > 1, "--context-parallel-size > 1"),
        (parallel.expert_model_parallel_size > 1, "--expert-model-parallel-size > 1"),
        (parallel.sequence_parallel, "--sequence-parallel"),
    ]
    for bad, what in refused:
        if bad:
            raise ConfigError(
                f"--eval-tasks runs on the live model with one pipeline stage and whole "
                f"sequences per rank: not with {what}. Evaluate the saved checkpoints with "
                "tools/evaluate.py --load CKPT instead (it reshards to any layout)"
            )


def refuse_dry_run_only_flags(cfg: DLMConfig) -> None:
    """Megatron-LM options that --dry-run accepts but training does not implement, and
    --mock-data given with real data."""
    if cfg.training.rampup_batch_size is not None:
        raise ConfigError(
            "--rampup-batch-size: batch-size ramp-up is not implemented (only --dry-run accepts "
            "it, sizing the run at --global-batch-size); train at a fixed --global-batch-size"
        )
    data = cfg.data
    if data.mock_data and (data.data_path or data.train_data_path or data.valid_data_path):
        raise ConfigError(
            "--mock-data replaces the data: give it or --data-path/--train-data-path, not both"
        )


def use_mock_data(cfg: DLMConfig, tokenizer) -> None:
    """--mock-data: write the synthetic dataset (megatron_dlm/data/mock.py) under
    --data-cache-path, else the run directory's ``mock_data/``, and train on it as --data-path."""
    from megatron_dlm.data.mock import write_mock_dataset

    directory = cfg.data.data_cache_path or run_directory(cfg) / "mock_data"
    prefix = write_mock_dataset(
        directory, tokenizer, seq_length=cfg.model.seq_length, seed=cfg.training.seed
    )
    cfg.data.data_path = [prefix]


def preflight(cfg: DLMConfig, world_size: int | None = None) -> CheckedRun:
    """Check everything about ``cfg`` that needs no process group; call on every rank.

    Args:
        cfg: the run.
        world_size: ranks of the job (default: ``WORLD_SIZE``, else 1).

    Raises:
        ConfigError: the layout, batch sizes or budget do not fit (naming the flags).
        NotADirectoryError, PermissionError, FileNotFoundError: an output folder that cannot
            be written, or a missing ``--load``.
        TokenizerError: the tokenizer is missing or unusable.
        DatasetError, BudgetError: the data is missing, corrupt, from another tokenizer, or
            too small for the budget.
    """
    world_size = world_size_from_env() if world_size is None else world_size
    check_eval_tasks_layout(cfg)
    refuse_dry_run_only_flags(cfg)
    layout = resolve_batch_layout(cfg, cfg.parallel.data_parallel_size(world_size))
    ckpt = cfg.checkpoint
    if ckpt.save:
        check_output_dir(ckpt.save, "--save")
    run_dir = run_directory(cfg)
    if not ckpt.save or run_dir != Path(ckpt.save):
        check_output_dir(run_dir, "--log-dir" if cfg.logging.log_dir else "the run directory")
    if ckpt.load and ckpt.load != ckpt.save and not Path(ckpt.load).exists():
        raise FileNotFoundError(f"--load {ckpt.load}: no checkpoint there (no such directory)")
    tokenizer = build_tokenizer(cfg.data)
    if cfg.data.mock_data and not cfg.data.data_path:
        use_mock_data(cfg, tokenizer)
    datasets = check_datasets(
        cfg.data,
        seq_length=cfg.model.seq_length,
        tokenizer=tokenizer,
        train_samples=layout.train_iters * layout.global_batch_size,
        valid_samples=cfg.training.eval_iters * layout.global_batch_size,
        test_samples=0,
        seed=cfg.training.seed,
    )
    return CheckedRun(world_size, layout, tokenizer, datasets)
