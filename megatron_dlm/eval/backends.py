"""What evaluation needs from a model, from an exported HF folder or a Megatron checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from megatron_dlm.sampling.common import LogitsFn


@dataclass
class EvalBackend:
    """A model as seen by the likelihood estimators and the sampler."""

    logits_fn: LogitsFn
    tokenize: Callable[[str], list[int]]
    detokenize: Callable[[list[int]], str]
    mask_id: int
    eos_id: int
    pad_id: int
    vocab_size: int
    bidirectional: bool
    max_length: int
    close: Callable[[], None] = field(default=lambda: None)


def megatron_backend(path: str | Path, tokenizer_model: str | None = None) -> EvalBackend:
    """One process, TP=1: the checkpoint is resharded to this layout on load."""
    from megatron_dlm.config import ParallelConfig
    from megatron_dlm.data.tokenizer import load_recorded_tokenizer
    from megatron_dlm.models import load_trained
    from megatron_dlm.runtime.distributed import destroy_distributed, init_distributed
    from megatron_dlm.sampling.megatron_model import megatron_logits_fn

    init_distributed(ParallelConfig())
    trained = load_trained(path)
    cfg, vocab = trained.config, trained.vocab
    tokenizer = load_recorded_tokenizer(trained.tokenizer, tokenizer_model, "tokenizer_model=")
    return EvalBackend(
        logits_fn=megatron_logits_fn(trained.module, bidirectional=trained.bidirectional),
        tokenize=tokenizer.tokenize,
        detokenize=lambda ids: tokenizer.detokenize(list(ids)),
        mask_id=vocab.mask_id,
        eos_id=vocab.eod_id,
        pad_id=vocab.pad_id,
        vocab_size=vocab.size,
        bidirectional=cfg.objective.bidirectional,
        max_length=cfg.model.max_position_embeddings,
        close=destroy_distributed,
    )


def hf_backend(path: str | Path, device: str | None = None, dtype: str = "float32") -> EvalBackend:
    """An exported folder (tools/convert_to_hf.py), loaded with ``trust_remote_code``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    bidirectional = not getattr(config, "is_causal", False)
    auto = AutoModelForMaskedLM if bidirectional else AutoModelForCausalLM
    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        # lm-eval passes --device cuda by default, also on machines without a GPU.
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = auto.from_pretrained(path, trust_remote_code=True, dtype=getattr(torch, dtype)).to(
        device
    )
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    special = json.loads((Path(path) / "config.json").read_text())

    def logits_fn(tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = model(input_ids=tokens.to(device), attention_mask=valid.long().to(device))
        return out.logits.float().cpu()

    return EvalBackend(
        logits_fn=logits_fn,
        tokenize=lambda text: tokenizer.encode(text, add_special_tokens=False),
        detokenize=lambda ids: tokenizer.decode(list(ids), skip_special_tokens=False),
        mask_id=special["mask_token_id"],
        eos_id=special["eos_token_id"],
        pad_id=special["pad_token_id"],
        vocab_size=special.get("tokenizer_vocab_size", special["vocab_size"]),
        bidirectional=bidirectional,
        max_length=special.get("max_position_embeddings", 4096),
    )


def load_backend(
    pretrained: str, *, device: str | None = None, dtype: str = "float32", **kwargs
) -> EvalBackend:
    """An HF export directory or a Megatron-DLM checkpoint directory."""
    path = Path(pretrained)
    if not path.exists():
        raise FileNotFoundError(f"pretrained={pretrained}: no such directory")
    from megatron_dlm.checkpoint import has_checkpoint

    # A checkpoint directory also holds the run's config.json: check it first.
    if has_checkpoint(path):
        return megatron_backend(path, kwargs.get("tokenizer_model"))
    if (path / "config.json").is_file():
        return hf_backend(path, device, dtype)
    raise ValueError(
        f"pretrained={pretrained} is neither an exported Hugging Face folder (config.json) nor a "
        "Megatron-DLM checkpoint (latest_checkpointed_iteration.txt)"
    )
