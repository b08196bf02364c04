"""The vocabulary a model is built for: its size and the special ids a DLM needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from megatron_dlm.checkpoint import TokenizerRecord


class TokenizerLike(Protocol):
    """What the model and objectives need from a tokenizer (megatron_dlm.data has the real ones)."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def mask_id(self) -> int: ...

    @property
    def eod(self) -> int: ...

    @property
    def pad(self) -> int: ...


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel_size: int) -> int:
    """Pad like Megatron-LM: up to a multiple of ``divisible_by * tensor_parallel_size``.

    The padding keeps each TP shard of the embedding and output layer the same, GEMM-friendly
    size. Padded rows are never produced by the tokenizer.
    """
    multiple = divisible_by * tensor_parallel_size
    return -(-vocab_size // multiple) * multiple


@dataclass(frozen=True)
class Vocab:
    """Vocabulary size and special token ids (ids come from the tokenizer, never literals)."""

    size: int
    mask_id: int
    eod_id: int
    pad_id: int

    def __post_init__(self):
        if self.size <= 0:
            raise ValueError(f"vocabulary size must be positive, got {self.size}")
        for name in ("mask_id", "eod_id", "pad_id"):
            value = getattr(self, name)
            if not 0 <= value < self.size:
                raise ValueError(f"{name}={value} is outside the vocabulary [0, {self.size})")
        if self.mask_id in (self.eod_id, self.pad_id):
            raise ValueError("the mask token must differ from the eod and pad tokens")

    @classmethod
    def from_tokenizer(cls, tokenizer: TokenizerLike) -> Vocab:
        return cls(tokenizer.vocab_size, tokenizer.mask_id, tokenizer.eod, tokenizer.pad)

    @classmethod
    def from_record(cls, record: TokenizerRecord) -> Vocab:
        """The vocabulary of a checkpoint's (or dataset's) tokenizer record."""
        return cls(record.vocab_size, record.mask_id, record.eod_id, record.pad_id)

    def padded_size(self, divisible_by: int, tensor_parallel_size: int) -> int:
        return padded_vocab_size(self.size, divisible_by, tensor_parallel_size)
