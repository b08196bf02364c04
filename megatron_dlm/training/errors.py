"""How ``pretrain_dlm.py`` reports an error: which ones are bad input, which a failed run.

Known errors get one line on stderr (once per job: :mod:`megatron_dlm.runtime.error_report`) and
an exit status; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno

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
    from megatron_dlm.checkpoint import CheckpointError
    from megatron_dlm.config import ConfigError
    from megatron_dlm.data.budget import BudgetError
    from megatron_dlm.data.dataset_checks import DatasetError
    from megatron_dlm.data.indexed import IndexedDatasetError
    from megatron_dlm.data.metadata import DatasetMetadataError
    from megatron_dlm.data.tokenizer import TokenizerError
    from megatron_dlm.models.specs import MissingDependencyError

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
    from megatron_dlm.checkpoint import CheckpointWriteError
    from megatron_dlm.training.trainer import TrainingAborted

    return (TrainingAborted, CheckpointWriteError)


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
