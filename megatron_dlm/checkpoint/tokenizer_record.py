"""The tokenizer record: which vocabulary a checkpoint or a dataset's token ids belong to.

One frozen type for the checkpoint's ``tokenizer`` entry and the ``tokenizer`` entry of a
dataset's ``.meta.json`` sidecar (``megatron_dlm.data.metadata``), so the two are compared
field by field. Two records *match* when the vocabulary size, the vocabulary fingerprint
(``vocab_sha256``: the pieces in id order) and the special ids are equal. The model file's
path and sha256 are provenance: a sentencepiece model and its Hugging Face export match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

from megatron_dlm.checkpoint.errors import CheckpointError

MATCHED_FIELDS = ("vocab_size", "vocab_sha256", "eod_id", "pad_id", "mask_id")
"""What must agree for token ids to mean the same tokens."""

# Names earlier writers used: checkpoints (format 1) and dataset sidecars (version 1).
_LEGACY_KEYS = {
    "mask": "mask_id",
    "eod": "eod_id",
    "pad": "pad_id",
    "path": "model",
    "sha256": "vocab_sha256",
}


class FingerprintedTokenizer(Protocol):
    """What a record is made from (``DLMTokenizer`` and ``TextEncoder`` have it)."""

    tokenizer_type: str
    vocab_size: int
    vocab_sha256: str
    model_sha256: str
    mask_id: int
    eod: int
    pad: int


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class TokenizerRecord:
    """A vocabulary and its special ids, as recorded next to token ids."""

    vocab_size: int
    """Number of token ids (before padding for tensor parallelism)."""
    mask_id: int
    """Id of the mask token."""
    eod_id: int
    """Id of the end-of-document token (appended to every document)."""
    pad_id: int
    """Id of the padding token."""
    type: str | None = None
    """``--tokenizer-type`` (``SentencePieceTokenizer``, ``HuggingFaceTokenizer``, ...)."""
    model: str | None = None
    """The file or folder it was loaded from (``--tokenizer-model``)."""
    vocab_sha256: str | None = None
    """Fingerprint of the vocabulary: the pieces in id order."""
    model_sha256: str | None = None
    """sha256 of the model file (provenance only)."""
    merge_file: str | None = None
    """GPT-2's ``merges.txt`` (``GPT2BPETokenizer``, whose ``model`` is the ``vocab.json``)."""
    original_vocab_size: int | None = None
    """Ids of the tokenizer's own vocabulary; ``added_tokens`` follow it."""
    added_tokens: tuple[str, ...] | None = None
    """Special tokens appended to the tokenizer's vocabulary (a mask or padding token it
    lacked), in id order from ``original_vocab_size``: later tools append them again."""
    special_tokens: dict[str, str] | None = None
    """The token of each role: ``{"mask_token": ..., "eos_token": ..., "pad_token": ...}``."""

    @classmethod
    def from_tokenizer(cls, tokenizer: FingerprintedTokenizer, model: str = "") -> TokenizerRecord:
        return cls(
            vocab_size=int(tokenizer.vocab_size),
            mask_id=int(tokenizer.mask_id),
            eod_id=int(tokenizer.eod),
            pad_id=int(tokenizer.pad),
            type=tokenizer.tokenizer_type,
            model=model or _text(getattr(tokenizer, "model_path", None)),
            vocab_sha256=tokenizer.vocab_sha256,
            model_sha256=tokenizer.model_sha256,
            merge_file=_text(getattr(tokenizer, "merge_file", None)),
            original_vocab_size=getattr(tokenizer, "original_vocab_size", None),
            added_tokens=tuple(getattr(tokenizer, "added_tokens", ()) or ()),
            special_tokens=getattr(tokenizer, "special_tokens", None),
        )

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if values["added_tokens"] is not None:
            values["added_tokens"] = list(values["added_tokens"])
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "tokenizer record") -> TokenizerRecord:
        """Read a record written by this or an earlier version (old key names are mapped).

        Raises:
            CheckpointError: a required field (size or a special id) is missing or not an int;
                the message names ``source``.
        """
        if not isinstance(values, dict):
            raise CheckpointError(f"{source}: expected a mapping, found {type(values).__name__}")
        renamed = {_LEGACY_KEYS.get(k, k): v for k, v in values.items()}
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in renamed.items() if k in names}
        required = ("vocab_size", "mask_id", "eod_id", "pad_id")
        bad = [k for k in required if not isinstance(kwargs.get(k), int)]
        if bad:
            raise CheckpointError(f"{source} lacks {', '.join(bad)}")
        if kwargs.get("added_tokens") is not None:
            kwargs["added_tokens"] = tuple(kwargs["added_tokens"])
        return cls(**kwargs)

    def differences(self, other: TokenizerRecord) -> list[tuple[str, Any, Any]]:
        """``(field, ours, theirs)`` for each matched field that differs; a field either record
        does not know (None) is skipped."""
        out = []
        for name in MATCHED_FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is not None and theirs is not None and mine != theirs:
                out.append((name, mine, theirs))
        return out
