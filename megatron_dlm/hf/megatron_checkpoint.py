"""Load a Megatron-DLM checkpoint saved at any layout into one process, for export.

The model is rebuilt at TP=PP=EP=1 with the local (pure PyTorch) layers in float32, and
dist_checkpointing reshards the saved tensors into it: no requirement that the checkpoint was
saved at TP=PP=1, nor with the layer implementation or precision it was trained with.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.api import CheckpointException

from megatron_dlm.config import DLMConfig, ParallelConfig
from megatron_dlm.models.vocab import Vocab
from megatron_dlm.training.checkpointing import (
    CheckpointError,
    load_model_weights,
    read_checkpoint_info,
    resolve_checkpoint,
    saved_vocab_rows,
)


@dataclass
class LoadedCheckpoint:
    """A checkpoint's model (one TP=PP=EP=1 chunk, eval mode) and what describes it."""

    config: DLMConfig
    """The training config, with the single-process layout it was loaded at."""
    model: torch.nn.Module
    vocab: Vocab
    tokenizer: dict
    """The checkpoint's tokenizer record (vocab_size, mask_id, eod, pad, path, type, ...)."""
    directory: Path
    """The ``iter_*`` directory the weights came from."""
    iteration: int | None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Full (unsharded) tensors under megatron-core's TP=1 names, on the CPU."""
        return {
            name: tensor.detach().cpu()
            for name, tensor in self.model.state_dict().items()
            if isinstance(tensor, torch.Tensor)
        }


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Run inside a one-process torch.distributed world (made here unless one exists)."""
    from megatron.core import parallel_state

    from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        if torch.distributed.get_world_size() != 1:
            raise RuntimeError(
                "the Hugging Face converter runs in a single process (it reshards any saved "
                "layout to TP=PP=EP=1); launch it with python, not torchrun"
            )
        if not parallel_state.model_parallel_is_initialized():
            init_distributed(ParallelConfig())
        yield  # the caller owns the existing world
        return
    init_distributed(ParallelConfig())
    try:
        yield
    finally:
        destroy_distributed()


def export_config(saved: dict, saved_embedding_rows: int | None) -> DLMConfig:
    """The saved training config rebuilt for loading in one CPU-capable process.

    The layout becomes TP=PP=EP=1, the layers local (Transformer Engine checkpoints use the same
    tensor names), the weights float32. Megatron pads the vocabulary to a multiple of
    ``make_vocab_size_divisible_by`` x TP, so a checkpoint saved at another TP can hold more
    rows than TP=1 would pad to: the embedding is built with the saved row count.
    """
    saved = copy.deepcopy(saved)
    saved.pop("parallel", None)
    model = saved.setdefault("model", {})
    model.update(
        transformer_impl="local",
        moe_grouped_gemm=False,
        use_cpu_initialization=True,
        recompute_granularity=None,
        recompute_method=None,
        recompute_num_layers=None,
    )
    if saved_embedding_rows is not None:
        model["make_vocab_size_divisible_by"] = saved_embedding_rows
    saved["precision"] = {}
    return DLMConfig.from_dict(saved)


def load_checkpoint_for_export(path: str | Path) -> LoadedCheckpoint:
    """Rebuild the model of the checkpoint at ``path`` (a root with a tracker, or ``iter_*``).

    Call inside :func:`single_process`.

    Raises:
        CheckpointError: missing, unreadable or incomplete checkpoint, or one without the
            Megatron-DLM config and tokenizer record.
    """
    from megatron_dlm.models.provider import build_model

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"--load {path}: no such directory")
    directory = resolve_checkpoint(path)
    info = read_checkpoint_info(directory)
    if not info.get("config"):
        raise CheckpointError(f"{directory}: the checkpoint holds no Megatron-DLM config")
    tokenizer = dict(info.get("tokenizer") or {})
    missing = [k for k in ("vocab_size", "mask_id", "eod", "pad") if tokenizer.get(k) is None]
    if missing:
        raise CheckpointError(
            f"{directory}: the checkpoint's tokenizer record lacks {', '.join(missing)}"
        )
    cfg = export_config(info["config"], saved_vocab_rows(directory))
    vocab = Vocab(
        size=tokenizer["vocab_size"],
        mask_id=tokenizer["mask_id"],
        eod_id=tokenizer["eod"],
        pad_id=tokenizer["pad"],
    )
    (model,) = build_model(cfg, vocab)
    try:
        load_model_weights([model], directory)
    except (Exception, CheckpointException) as exc:  # the latter is a BaseException
        raise CheckpointError(
            f"{directory}: failed to load the model weights ({type(exc).__name__}: {exc})"
        ) from exc
    model.eval()
    return LoadedCheckpoint(
        config=cfg,
        model=model,
        vocab=vocab,
        tokenizer=tokenizer,
        directory=directory,
        iteration=info.get("iteration"),
    )
