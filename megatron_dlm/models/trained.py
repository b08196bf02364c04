"""``load_trained``: the one way every tool and backend rebuilds a trained model.

A checkpoint records its training config and tokenizer; the model is rebuilt from them at the
layout the caller runs (any TP/PP/EP: dist_checkpointing reshards the saved tensors) and put in
eval mode. Two rebuild rules, nowhere else:

* **inference** (default): the saved config at the caller's layout, sequence parallelism off
  (inference batches rarely divide the sequence); the saved layer implementation and precision,
  except that Transformer Engine layers become the local ones where TE is not installed (same
  tensor names).
* **export** (``for_export=True``): one process, TP=PP=EP=1, local layers, float32, no
  recompute: a plain module whose ``state_dict()`` is the full, unsharded weights.

Either way the embedding keeps the saved number of rows: Megatron pads the vocabulary to a
multiple of ``make_vocab_size_divisible_by`` x TP, so a checkpoint saved at one TP may hold more
rows than another TP would pad to.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_dlm.checkpoint import (
    CheckpointError,
    TokenizerRecord,
    load_model_weights,
    read_checkpoint_info,
    saved_vocab_rows,
)
from megatron_dlm.config import DLMConfig, ParallelConfig
from megatron_dlm.models.provider import build_model
from megatron_dlm.models.vocab import Vocab

logger = logging.getLogger(__name__)

_EXPORT_MODEL_FIELDS: dict[str, Any] = dict(
    transformer_impl="local",
    moe_grouped_gemm=False,
    use_cpu_initialization=True,
    recompute_granularity=None,
    recompute_method=None,
    recompute_num_layers=None,
)


@dataclass
class TrainedModel:
    """A checkpoint's model on this rank (eval mode) and what describes it."""

    config: DLMConfig
    """The training config with the layout, layers and precision it was rebuilt at."""
    model: list[torch.nn.Module]
    """This rank's chunks (one per virtual pipeline stage; one with ``for_export``)."""
    vocab: Vocab
    tokenizer: TokenizerRecord
    directory: Path
    """The ``iter_*`` directory the weights came from."""
    iteration: int | None

    @property
    def module(self) -> torch.nn.Module:
        """The single chunk (TP-sharded on this rank unless TP=1)."""
        if len(self.model) != 1:
            raise ValueError(f"the model has {len(self.model)} chunks on this rank, not one")
        return self.model[0]

    @property
    def bidirectional(self) -> bool:
        return self.config.objective.bidirectional

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of the single chunk under megatron-core's names, on the CPU (full tensors
        when the model was loaded ``for_export``)."""
        return {
            name: tensor.detach().cpu()
            for name, tensor in self.module.state_dict().items()
            if isinstance(tensor, torch.Tensor)
        }


def _have_transformer_engine() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("transformer_engine") is not None


def trained_config(
    saved: dict[str, Any],
    *,
    embedding_rows: int | None,
    parallel: ParallelConfig | None = None,
    for_export: bool = False,
) -> DLMConfig:
    """The saved training config (``DLMConfig.to_dict()``) rebuilt for loading (module doc).

    Raises:
        CheckpointError: the saved embedding cannot be split over the requested TP.
    """
    saved = copy.deepcopy(saved)
    model = saved.setdefault("model", {})
    if for_export:
        layout = ParallelConfig()
        model.update(_EXPORT_MODEL_FIELDS)
        saved["precision"] = {}
    else:
        layout = dataclasses.replace(parallel or ParallelConfig(), sequence_parallel=False)
        if model.get("transformer_impl") == "transformer_engine" and not _have_transformer_engine():
            logger.info("Transformer Engine is not available here: loading with the local layers")
            model.update(transformer_impl="local", moe_grouped_gemm=False)
            saved["precision"] = {**saved.get("precision", {}), "fp8_format": None}
    saved["parallel"] = dataclasses.asdict(layout)
    tp = layout.tensor_model_parallel_size
    if embedding_rows is not None:
        if embedding_rows % tp:
            raise CheckpointError(
                f"the checkpoint's {embedding_rows}-row embedding cannot be split over "
                f"--tensor-model-parallel-size {tp}"
            )
        model["make_vocab_size_divisible_by"] = embedding_rows // tp
    return DLMConfig.from_dict(saved)


def load_trained(
    path: str | Path, parallel: ParallelConfig | None = None, *, for_export: bool = False
) -> TrainedModel:
    """Rebuild the model of the checkpoint at ``path`` (a root with a tracker, or ``iter_*``).

    torch.distributed and megatron-core's parallel state must be initialised for ``parallel``
    (TP=PP=EP=1 with ``for_export``): :func:`megatron_dlm.runtime.distributed.init_distributed`,
    or :func:`~megatron_dlm.runtime.distributed.single_process` for one process.

    Raises:
        CheckpointError: missing, incomplete or unreadable checkpoint, one without the
            Megatron-DLM config and tokenizer record, or weights that do not load.
    """
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("load_trained needs megatron-core's parallel state: call "
                           "init_distributed(parallel) or use single_process() first")  # fmt: skip
    info = read_checkpoint_info(path)
    if info.tokenizer is None:
        raise CheckpointError(f"{info.directory}: the checkpoint holds no tokenizer record")
    info.training_config()  # a clear error for a checkpoint without our config
    cfg = trained_config(
        info.config,
        embedding_rows=saved_vocab_rows(info.directory),
        parallel=parallel,
        for_export=for_export,
    )
    vocab = Vocab.from_record(info.tokenizer)
    model = build_model(cfg, vocab)
    load_model_weights(model, info.directory)
    for chunk in model:
        chunk.eval()
    return TrainedModel(
        config=cfg,
        model=model,
        vocab=vocab,
        tokenizer=info.tokenizer,
        directory=info.directory,
        iteration=info.iteration,
    )
