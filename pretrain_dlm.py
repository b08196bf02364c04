"""Pretrain a masked diffusion LM (or the matched AR baseline) with megatron-core.

Usage (every flag: ``python pretrain_dlm.py --help``; a recipe: ``--config recipe.yaml``):

    # one process (CPU or one GPU)
    python pretrain_dlm.py --data-path data/stdlib_text_document \\
        --tokenizer-model data/tokenizer.model --train-iters 200 --save runs/dlm

    # one node, 8 GPUs, TP=2
    torchrun --nproc-per-node 8 pretrain_dlm.py --config recipe.yaml \\
        --tensor-model-parallel-size 2 --bf16 --transformer-impl transformer_engine

    # multi-node: the same command on every node
    torchrun --nnodes $NNODES --node-rank $NODE_RANK --nproc-per-node 8 \\
        --rdzv-backend c10d --rdzv-endpoint $MASTER_ADDR:29500 pretrain_dlm.py --config ...

    # the matched autoregressive baseline: change one flag
    python pretrain_dlm.py ... --objective ar

    # size a job without a GPU: layout, parameters, memory, FLOPs, projected time
    python pretrain_dlm.py --config recipe.yaml --dry-run --dry-run-world-size 64
"""

from __future__ import annotations

import errno
import sys

from megatron_dlm.config.cli import parse_config
from megatron_dlm.runtime.logging_utils import setup_logging

PROG = "pretrain_dlm.py"
EXIT_BAD_INPUT = 2
"""A flag, file or folder that cannot be used (the run did not start, or stopped on it)."""
EXIT_RUN_FAILED = 1
"""The run started and then stopped: it diverged (TrainingAborted) or the disk is full."""

# OSErrors that say something about the user's paths or machine, not about a bug.
_USER_OS_ERRNOS = {
    errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
    errno.EROFS, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT,
}  # fmt: skip


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's error types that mean bad input: one line on stderr, exit 2.

    The one list of them (imported here, not at module level, so ``--help`` stays fast).
    """
    from megatron_dlm.config import ConfigError
    from megatron_dlm.data.budget import BudgetError
    from megatron_dlm.data.dataset_checks import DatasetError
    from megatron_dlm.data.indexed import IndexedDatasetError
    from megatron_dlm.data.metadata import DatasetMetadataError
    from megatron_dlm.data.tokenizer import TokenizerError
    from megatron_dlm.models.specs import MissingDependencyError
    from megatron_dlm.training.checkpointing import CheckpointError

    return (
        ConfigError,
        TokenizerError,
        DatasetError,
        DatasetMetadataError,
        IndexedDatasetError,
        BudgetError,
        CheckpointError,
        MissingDependencyError,
    )


def run_failures() -> tuple[type[BaseException], ...]:
    """Errors of a run that started and then had to stop: one line, exit 1."""
    from megatron_dlm.training.trainer import TrainingAborted

    return (TrainingAborted,)


def exit_code(exc: BaseException) -> int | None:
    """The exit status for ``exc``, or None for an unexpected error (shown with its traceback)."""
    if isinstance(exc, run_failures()):
        return EXIT_RUN_FAILED
    if isinstance(exc, user_errors()):
        return EXIT_BAD_INPUT
    if isinstance(exc, OSError) and (exc.errno is None or exc.errno in _USER_OS_ERRNOS):
        # errno None: one we raise with a message (--load DIR: no checkpoint there).
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return EXIT_RUN_FAILED if full else EXIT_BAD_INPUT
    return None


def describe(exc: BaseException) -> str:
    """One line: our messages as they are, an OS error as ``path: reason``."""
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is None:
            return exc.strerror
        where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
        return f"{where}: {exc.strerror}"
    return str(exc)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(argv, prog=PROG, description=__doc__)
    setup_logging()
    try:
        if cfg.training.dry_run:
            from megatron_dlm.training.dry_run import dry_run, format_report

            print(format_report(cfg, dry_run(cfg)))
            return 0
        from megatron_dlm.training.pretrain import pretrain

        pretrain(cfg)
    except Exception as exc:
        from megatron_dlm.runtime.error_report import exit_code_reported, report_error

        code = exit_code(exc)
        if code is None:
            # Another rank stopped on an error (and said so): this rank's failure is its
            # consequence (a collective whose peer is gone), not news.
            code = exit_code_reported()
            if code is None:
                raise
            return code
        report_error(f"{PROG}: error: {describe(exc)}", code)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
