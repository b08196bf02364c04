"""Check an export: the Megatron model and the exported HF model give the same logits."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from megatron_dlm.models.trained import TrainedModel

DEFAULT_RTOL = 1e-4


@dataclass
class VerifyReport:
    """How far the exported model's logits are from the Megatron model's."""

    max_abs_diff: float
    max_abs_logit: float
    tolerance: float
    positions: int
    rounded_to: str | None = None
    """The dtype the Megatron weights were rounded to first (a reduced-precision export)."""
    against: str | None = None
    """What the Megatron model was compared with (default: the exported folder)."""

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def __str__(self) -> str:
        rounded = f"; Megatron weights rounded to {self.rounded_to}" if self.rounded_to else ""
        against = f" against {self.against}" if self.against else ""
        relative = self.max_abs_diff / max(1.0, self.max_abs_logit)
        return (
            f"verify{against}: max |logits difference| = {self.max_abs_diff:.3e} "
            f"({relative:.1e} relative) over {self.positions} "
            f"token positions (2 sequences, one left-padded), tolerance {self.tolerance:.3e} "
            f"(largest |logit| {self.max_abs_logit:.3g}{rounded}): "
            + ("OK" if self.ok else "FAILED")
        )


def sample_batch(
    vocab_size: int, length: int, pad_id: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random sequences [2, length]; the second is left-padded by a third of its length.

    Returns tokens (int64) and valid (bool, False on padding).
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab_size, (2, length), generator=gen)
    valid = torch.ones(2, length, dtype=torch.bool)
    valid[1, : length // 3] = False
    tokens[1, : length // 3] = pad_id
    return tokens, valid


def is_stock_export(directory: str | Path) -> bool:
    """Whether the folder is a stock transformers class (no ``auto_map``, no remote code)."""
    config = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    return "auto_map" not in config


def load_exported(directory: str | Path, *, dtype: torch.dtype = torch.float32, device=None):
    """The exported model through the Auto classes, as users load it.

    DLMs load as ``AutoModelForMaskedLM``, AR models as ``AutoModelForCausalLM``: our modeling
    code with ``trust_remote_code``, or the stock class (Llama, Qwen, ...) without.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM

    if is_stock_export(directory):
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
        return model.to(device or "cpu").eval()
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    auto = AutoModelForCausalLM if config.is_causal else AutoModelForMaskedLM
    model = auto.from_pretrained(directory, trust_remote_code=True, dtype=dtype)
    return model.to(device or "cpu").eval()


@torch.no_grad()
def verify_export(
    loaded: TrainedModel,
    directory: str | Path,
    *,
    rtol: float = DEFAULT_RTOL,
    length: int = 32,
    round_weights_to: torch.dtype | None = None,
) -> VerifyReport:
    """Run the Megatron model and the export in ``directory`` on :func:`sample_batch`.

    The tolerance is ``rtol x max(1, largest |logit|)``. The HF model runs in float32; for a
    bfloat16 export pass ``round_weights_to=torch.bfloat16``: the Megatron weights are rounded
    the same way first (in place), so the check tests the mapping, not bf16 arithmetic.
    """
    from megatron_dlm.inference.megatron import megatron_logits_fn

    model, vocab = loaded.module, loaded.vocab
    device = next(model.parameters()).device
    if round_weights_to is not None:
        for param in model.parameters():
            param.data.copy_(param.data.to(round_weights_to).to(param.dtype))
    length = min(length, loaded.config.model.max_position_embeddings)
    tokens, valid = sample_batch(vocab.size, length, vocab.pad_id)
    fn = megatron_logits_fn(model, bidirectional=loaded.config.objective.bidirectional)
    reference = fn(tokens, valid)[..., : vocab.size]
    exported = load_exported(directory, device=device)
    # Positions as the Megatron model counts them (stock classes start at the left padding).
    positions = (valid.long().cumsum(-1) - 1).clamp_min(0)
    logits = exported(
        input_ids=tokens.to(device),
        attention_mask=valid.long().to(device),
        position_ids=positions.to(device),
    ).logits
    logits = logits.float().cpu()[..., : vocab.size]
    if logits.shape != reference.shape:
        raise ValueError(f"exported logits have shape {tuple(logits.shape)}, "
                         f"the Megatron model's {tuple(reference.shape)}")  # fmt: skip
    diff = (logits - reference).abs()[valid]
    scale = reference[valid].abs().max().item()
    return VerifyReport(
        max_abs_diff=diff.max().item(),
        max_abs_logit=scale,
        tolerance=rtol * max(1.0, scale),
        positions=int(valid.sum()),
        rounded_to=str(round_weights_to).replace("torch.", "") if round_weights_to else None,
        against=f"the stock {type(exported).__name__}" if is_stock_export(directory) else None,
    )
