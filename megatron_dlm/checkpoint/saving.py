"""Writing checkpoints: complete, verified and finite, or not at all.

A save writes ``iter_XXXXXXX.tmp/`` (every rank its shards; with the data-parallel ranks sharing
the work, as Megatron-LM's ``--ckpt-fully-parallel-save``), then a manifest of sizes and sha256
(:mod:`megatron_dlm.checkpoint.manifest`), renames the directory to ``iter_XXXXXXX/`` and only
then points the tracker at it. A process killed at any moment leaves the previous checkpoint as
the one that loads; a failed write (full disk, unwritable directory) removes its ``.tmp`` and
raises :class:`CheckpointError`; weights with NaN/Inf are never saved, so ``--keep-last-k``
rotation can never replace good checkpoints with broken ones.

With ``async_save`` the shards are written by a forked process while training goes on
(megatron-core's asynchronous torch_dist save); the manifest, rename and tracker come when the
write is complete, at the next :meth:`CheckpointSaver.maybe_finalize`, save or close.

Preemption: SLURM and ``timeout`` signal every process of the job. dist_checkpointing's writer
reports results through a ``multiprocessing.Manager`` server process that would die of that
SIGTERM (the save then fails with BrokenPipeError), so it is started here ignoring those signals.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
from pathlib import Path

import torch
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
from megatron.core.dist_checkpointing.strategies.fully_parallel import (
    FullyParallelSaveStrategyWrapper,
)

from megatron_dlm.checkpoint.errors import CheckpointError
from megatron_dlm.checkpoint.info import CHECKPOINT_VERSION
from megatron_dlm.checkpoint.manifest import write_manifest
from megatron_dlm.checkpoint.sharded import (
    model_sharded_state_dict,
    sharded_metadata,
    training_state_dict,
)
from megatron_dlm.checkpoint.state import TrainState
from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
from megatron_dlm.checkpoint.tracker import (
    checkpoint_name,
    list_checkpoints,
    read_tracker,
    write_tracker,
)
from megatron_dlm.config import DLMConfig

logger = logging.getLogger(__name__)

SIGNALS_THE_WRITER_IGNORES = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def _rank() -> int:
    return torch.distributed.get_rank()


def _device() -> torch.device:
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _agree_on_error(error: str | None) -> None:
    """Raise the same CheckpointError on every rank if any rank has an ``error``."""
    errors: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(errors, error)
    first = next((e for e in errors if e), None)
    if first:
        raise CheckpointError(first)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: " + " ".join(str(exc).split())[:300]


def start_writer_results_queue() -> None:
    """Start megatron-core's writer-results Manager now, immune to a job-wide SIGTERM.

    A signal disposition of SIG_IGN survives the exec of the spawned server process. Call it
    before installing the trainer's own signal handlers (the dispositions are set back after).
    """
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async
    except ImportError:  # pragma: no cover - other megatron-core layouts
        return
    getter = getattr(filesystem_async, "_get_write_results_queue", None)
    if getter is None or getattr(filesystem_async, "_results_queue", None) is not None:
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in SIGNALS_THE_WRITER_IGNORES}
    try:
        getter()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _weights_are_finite(model: list[torch.nn.Module]) -> bool:
    """Whether every rank's weights are finite (collective)."""
    bad = any(
        not bool(torch.isfinite(p.detach()).all()) for chunk in model for p in chunk.parameters()
    )
    flag = torch.tensor([1.0 if bad else 0.0], device=_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return flag.item() == 0.0


class CheckpointSaver:
    """Saves a run's checkpoints under ``root`` (collective: every rank makes the same calls).

    Args:
        root: the ``--save`` directory.
        keep_last_k: keep only this many newest checkpoints (``--keep-last-k``).
        async_save: write shards in the background (``--async-save``).
        fully_parallel: spread the writes over the data-parallel ranks.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        keep_last_k: int | None = None,
        async_save: bool = False,
        fully_parallel: bool = True,
    ):
        self.root = Path(root)
        self.keep_last_k = keep_last_k
        self.async_save = async_save
        self.fully_parallel = fully_parallel
        self._strategy = None
        self._queue = None
        self._pending: Path | None = None
        self._prepared = False

    # ---------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Create ``root`` and check it is writable; remove stale ``.tmp`` saves (collective).

        Call before training so that an unwritable ``--save`` fails in seconds, not at the
        first save hours later.
        """
        if self._prepared:
            return
        error = None
        if _rank() == 0:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                probe = self.root / f".write-test-{torch.distributed.get_world_size()}"
                probe.write_text("ok")
                probe.unlink()
                for stale in self.root.glob("iter_*.tmp"):
                    logger.info("removing %s, left by a save that did not complete", stale)
                    shutil.rmtree(stale, ignore_errors=True)
            except OSError as exc:
                error = f"--save {self.root}: cannot write there ({exc.strerror or exc})"
        _agree_on_error(error)
        start_writer_results_queue()
        if self.async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self._queue = AsyncCallsQueue(persistent=False)  # forked writer: a memory snapshot
        self._prepared = True

    def _save_strategy(self):
        if self._strategy is None:
            strategy = get_default_save_sharded_strategy()
            group = parallel_state.get_data_parallel_group(with_context_parallel=True)
            if self.fully_parallel and torch.distributed.get_world_size(group) > 1:
                strategy = FullyParallelSaveStrategyWrapper(strategy, group,
                                                            do_cache_distribution=True)  # fmt: skip
            self._strategy = strategy
        return self._strategy

    # ---------------------------------------------------------------- save
    def save(
        self,
        train_state: TrainState,
        model: list[torch.nn.Module],
        optimizer=None,
        scheduler=None,
        *,
        config: DLMConfig | None = None,
        tokenizer: TokenizerRecord | None = None,
        extra: dict | None = None,
    ) -> Path:
        """Save everything a bit-exact resume needs. Returns the ``iter_*`` directory (complete
        on return unless ``async_save``).

        Raises:
            CheckpointError: non-finite weights, or the write failed (nothing is left behind
                and the tracker still names the previous checkpoint).
        """
        self.prepare()
        self.finalize(blocking=True)  # one save in flight at most
        final = checkpoint_name(self.root, train_state.iteration)
        if not _weights_are_finite(model):
            raise CheckpointError(
                f"refusing to save {final}: the weights hold NaN/Inf values; the newest good "
                f"checkpoint in {self.root} (tracker: {read_tracker(self.root)}) is kept"
            )
        tmp = final.with_name(final.name + ".tmp")
        error = None
        if _rank() == 0:
            try:
                if tmp.exists():
                    shutil.rmtree(tmp)
                tmp.mkdir()
            except OSError as exc:
                error = f"--save {self.root}: cannot create {tmp.name} ({exc.strerror or exc})"
        _agree_on_error(error)
        metadata = sharded_metadata(optimizer)
        state = training_state_dict(
            model, optimizer, scheduler, metadata, with_optimizer=True, is_loading=False
        )
        state.update(
            extra or {},
            checkpoint_version=CHECKPOINT_VERSION,
            iteration=train_state.iteration,
            train_state=train_state.to_dict(),
            config=config.to_dict() if config is not None else None,
            tokenizer=tokenizer.to_dict() if tokenizer is not None else None,
            world_size=torch.distributed.get_world_size(),
        )
        with self._cleanup_on_failure(tmp, final):
            request = dist_checkpointing.save(
                state,
                str(tmp),
                sharded_strategy=self._save_strategy(),
                async_sharded_save=self.async_save,
                content_metadata=metadata,
            )
        if request is None:
            self._complete(tmp, final, train_state.iteration)
            return final
        request.finalize_fns.append(lambda: self._complete(tmp, final, train_state.iteration))
        self._pending = tmp
        self._queue.schedule_async_request(request)
        logger.info("saving checkpoint %s in the background (--async-save)", final)
        return final

    @contextlib.contextmanager
    def _cleanup_on_failure(self, tmp: Path, final: Path):
        try:
            yield
        except BaseException as exc:  # torch's CheckpointException derives from BaseException
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            if _rank() == 0:
                shutil.rmtree(tmp, ignore_errors=True)
            raise CheckpointError(
                f"--save {self.root}: writing {final.name} failed ({_reason(exc)}); removed "
                f"{tmp.name}, the tracker still names iteration {read_tracker(self.root)}"
            ) from exc

    def _complete(self, tmp: Path, final: Path, iteration: int) -> None:
        """Manifest, rename, tracker, rotation (collective)."""
        with self._cleanup_on_failure(tmp, final):
            write_manifest(tmp)
            torch.distributed.barrier()
            if _rank() == 0:
                replaced = final.with_name(final.name + ".old")
                if final.exists():  # the same iteration saved again: never delete first
                    final.rename(replaced)
                tmp.rename(final)
                shutil.rmtree(replaced, ignore_errors=True)
                write_tracker(self.root, iteration)
                if self.keep_last_k:
                    remove_old_checkpoints(self.root, self.keep_last_k)
            torch.distributed.barrier()
        self._pending = None
        logger.info("saved checkpoint %s", final)

    def finalize(self, blocking: bool = False) -> None:
        """Complete a finished background save (wait for it with ``blocking``); collective."""
        if self._queue is None or self._pending is None:
            return
        tmp = self._pending
        with self._cleanup_on_failure(tmp, tmp.with_suffix("")):
            self._queue.maybe_finalize_async_calls(blocking=blocking)

    def close(self) -> None:
        """Wait for a background save to complete (collective)."""
        self.finalize(blocking=True)
        if self._queue is not None:
            self._queue.close()
            self._queue = None


def remove_old_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``root``; the one the
    tracker names is never deleted."""
    newest = read_tracker(root)
    protected = checkpoint_name(root, newest) if newest is not None else None
    for old in list_checkpoints(root)[:-keep]:
        if old == protected:
            continue
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s (--keep-last-k %d)", old, keep)


def save_checkpoint(
    root: str | Path,
    train_state: TrainState,
    model: list[torch.nn.Module],
    optimizer=None,
    scheduler=None,
    *,
    config: DLMConfig | None = None,
    tokenizer: TokenizerRecord | None = None,
    keep_last_k: int | None = None,
) -> Path:
    """One synchronous save (collective); see :class:`CheckpointSaver`."""
    saver = CheckpointSaver(root, keep_last_k=keep_last_k)
    return saver.save(train_state, model, optimizer, scheduler, config=config, tokenizer=tokenizer)


def save_model_weights(model_chunks: list[torch.nn.Module], directory: str | Path) -> None:
    """Save only the weights into ``directory`` (collective). For tests and conversions."""
    directory = Path(directory)
    if _rank() == 0:
        directory.mkdir(parents=True, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(model_sharded_state_dict(model_chunks), str(directory))
    write_manifest(directory)
    torch.distributed.barrier()
