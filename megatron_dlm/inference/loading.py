"""``load_model``: a Megatron-DLM checkpoint or an exported Hugging Face folder, loaded once.

* A checkpoint (any saved TP/PP/EP layout) is rebuilt by :func:`megatron_dlm.models.load_trained`
  at the layout this process runs: one process, or every rank of a ``torchrun`` /
  ``accelerate launch`` world (``parallel`` gives TP and EP; the other ranks are data-parallel
  replicas). Inference runs one pipeline stage: a checkpoint saved with PP > 1 is resharded
  to PP=1 on load.
* An export (tools/convert_to_hf.py) loads with ``transformers`` and ``trust_remote_code``; under
  a launcher every rank holds a replica (gloo on CPUs, NCCL on GPUs).

Process groups this function creates are destroyed by the model's ``close()``; existing ones are
used as they are.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from megatron_dlm.config import ConfigError, ParallelConfig
from megatron_dlm.inference.model import DataParallel, InferenceModel

logger = logging.getLogger(__name__)


def load_model(
    path: str | Path,
    *,
    parallel: ParallelConfig | None = None,
    device: str | None = None,
    dtype: str = "float32",
    tokenizer_model: str | None = None,
    seed: int = 1234,
) -> InferenceModel:
    """Load the model at ``path`` for generation and scoring.

    Args:
        path: a checkpoint root (with ``latest_checkpointed_iteration.txt``), an ``iter_*``
            folder, or an exported Hugging Face folder (``config.json``).
        parallel: checkpoints: the tensor/expert-parallel layout to run at (default: one rank
            per replica).
        device: exports: ``cpu``, ``cuda`` or ``cuda:N`` (default: this rank's GPU, else CPU).
        dtype: exports: ``float32``, ``bfloat16`` or ``float16``.
        tokenizer_model: checkpoints: a tokenizer to use instead of the recorded one.
        seed: checkpoints: the seed for megatron-core's RNG state.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError / ConfigError / CheckpointError: neither kind of model, a layout that
            does not fit the world, a tokenizer that does not match.
    """
    from megatron_dlm.checkpoint import has_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such directory")
    # A checkpoint directory also holds the run's config.json: check it first.
    if has_checkpoint(path) or path.name.startswith("iter_"):
        return _load_megatron(path, parallel or ParallelConfig(), tokenizer_model, seed)
    if (path / "config.json").is_file():
        return _load_hf(path, device, dtype)
    raise ValueError(
        f"{path} is neither an exported Hugging Face folder (config.json) nor a Megatron-DLM "
        "checkpoint (latest_checkpointed_iteration.txt)"
    )


def _load_megatron(
    path: Path, parallel: ParallelConfig, tokenizer_model: str | None, seed: int
) -> InferenceModel:
    from megatron.core import parallel_state

    from megatron_dlm.data.tokenizer import load_recorded_tokenizer
    from megatron_dlm.inference.megatron import megatron_logits_fn
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed

    if parallel.pipeline_model_parallel_size != 1:
        raise ConfigError(
            "inference runs one pipeline stage: use --pipeline-model-parallel-size 1 (a "
            "checkpoint saved with any PP is resharded on load)"
        )
    owned = not parallel_state.model_parallel_is_initialized()
    if owned:
        init_distributed(parallel, seed=seed)
    try:
        trained = load_trained(path, parallel)
        cfg, vocab = trained.config, trained.vocab
        # The recorded tokenizer with its appended tokens and special ids (a mismatch is
        # refused, naming the option).
        tokenizer = load_recorded_tokenizer(trained.tokenizer, tokenizer_model, "tokenizer_model")
        if tokenizer.vocab_size != vocab.size or tokenizer.mask_id != vocab.mask_id:
            raise ValueError(
                f"tokenizer (vocab {tokenizer.vocab_size}, mask id {tokenizer.mask_id}) does "
                f"not match the checkpoint (vocab {vocab.size}, mask id {vocab.mask_id})"
            )
    except BaseException:
        if owned:
            destroy_distributed()
        raise
    world = torch.distributed.get_world_size()
    dp_size = parallel_state.get_data_parallel_world_size()
    data_parallel = DataParallel(
        rank=parallel_state.get_data_parallel_rank(),
        size=dp_size,
        group=parallel_state.get_data_parallel_group() if world > 1 else None,
        is_main=torch.distributed.get_rank() == 0,
    )
    logits_fn = megatron_logits_fn(trained.module, bidirectional=trained.bidirectional)
    logger.info(
        "loaded %s (iteration %s, %s) at TP %d, %d data-parallel replica(s)",
        trained.directory,
        trained.iteration,
        "DLM" if trained.bidirectional else "AR",
        parallel.tensor_model_parallel_size,
        dp_size,
    )
    return InferenceModel(
        logits_fn=logits_fn,
        tokenizer=tokenizer,
        bidirectional=trained.bidirectional,
        mask_id=vocab.mask_id,
        eos_id=vocab.eod_id,
        pad_id=vocab.pad_id,
        vocab_size=vocab.size,
        max_length=cfg.model.max_position_embeddings,
        device=logits_fn.device,
        source="megatron",
        path=str(path),
        data_parallel=data_parallel,
        close=destroy_distributed if owned else (lambda: None),
    )


def _hf_device(device: str | None) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None or device == "auto":
        return (
            torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
        )
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        # lm-eval passes --device cuda by default, also on machines without a GPU.
        logger.warning("device %s requested but CUDA is not available: using the CPU", device)
        return torch.device("cpu")
    if str(device) == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)


def _hf_data_parallel(device: torch.device) -> tuple[DataParallel, bool]:
    """Every rank of a launched world holds a replica; returns (it, whether we made the group)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and not torch.distributed.is_initialized():
        return DataParallel(), False
    owned = not torch.distributed.is_initialized()
    if owned:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend, init_method="env://")
    rank, size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    group = torch.distributed.group.WORLD if size > 1 else None
    return DataParallel(rank=rank, size=size, group=group, is_main=rank == 0), owned


def _load_hf(path: Path, device: str | None, dtype: str) -> InferenceModel:
    from megatron_dlm.inference.hf import HFTextTokenizer, hf_logits_fn, load_exported

    torch_device = _hf_device(device)
    model, config = load_exported(path, torch_device, dtype)
    from transformers import AutoTokenizer

    # AutoTokenizer reads config.json through AutoConfig: trust our config class, or it prompts.
    hf_tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    special = json.loads((path / "config.json").read_text())
    data_parallel, owned = _hf_data_parallel(torch_device)
    bidirectional = not getattr(config, "is_causal", False)
    return InferenceModel(
        logits_fn=hf_logits_fn(model),
        tokenizer=HFTextTokenizer(hf_tokenizer),
        bidirectional=bidirectional,
        mask_id=special.get("mask_token_id"),
        eos_id=special["eos_token_id"],
        pad_id=special["pad_token_id"],
        vocab_size=special.get("tokenizer_vocab_size", special["vocab_size"]),
        max_length=special.get("max_position_embeddings", 4096),
        device=torch_device,
        source="hf",
        path=str(path),
        data_parallel=data_parallel,
        hf_tokenizer=hf_tokenizer,
        close=torch.distributed.destroy_process_group if owned else (lambda: None),
    )
