"""Logging for multi-rank runs: one readable stream from rank 0, warnings from every rank."""

from __future__ import annotations

import logging
import os
import warnings

# megatron-core announces each missing optional accelerator package at import time; on a CPU
# machine that is expected and says nothing about the run.
_EXPECTED_WARNINGS = (
    r"Apex is not installed.*",
    r"Transformer Engine and Apex are not installed.*",
    r"Transformer Engine is not installed.*",
    r".*megatron\.core\.transformer\.custom_layers\.transformer_engine.*",
    r"full scope is deprecated.*",
)


class RankFilter(logging.Filter):
    """Pass INFO and below only on rank 0; warnings and errors from every rank.

    A record logged with ``extra={"all_ranks": True}`` passes on any rank: the training
    progress line comes from the last pipeline stage, which need not be rank 0.
    """

    def __init__(self, rank: int):
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = self.rank
        return (
            self.rank == 0
            or record.levelno >= logging.WARNING
            or getattr(record, "all_ranks", False)
        )


def quiet_expected_warnings() -> None:
    for pattern in _EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def setup_logging(level: int | str = logging.INFO, rank: int | None = None) -> None:
    """Configure the root logger once per process (idempotent)."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    quiet_expected_warnings()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_megatron_dlm", False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler._megatron_dlm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.filters.clear()
    handler.addFilter(RankFilter(rank))
    handler.setFormatter(
        logging.Formatter(
            "[%(asctime)s rank %(rank)s] %(levelname)s %(name)s: %(message)s", "%H:%M:%S"
        )
    )
    root.setLevel(level)
    # megatron-core logs its internals at INFO (FSDP detection, per-bucket details).
    logging.getLogger("megatron.core").setLevel(max(logging.WARNING, root.level))
