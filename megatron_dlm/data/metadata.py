"""Dataset metadata: the ``{prefix}.meta.json`` sidecar written next to ``{prefix}.bin/.idx``.

tools/preprocess_data.py records which tokenizer produced the token ids, so that training can
refuse a tokenizer whose vocabulary differs from the dataset's (the ids would mean other
tokens, silently). Format (version 1; docs/data-tools.md)::

    {
      "format": "megatron-dlm-dataset", "version": 1,
      "documents": 573, "tokens": 2794521, "dtype": "uint16", "eod_appended": true,
      "bin_bytes": 5589042, "idx_bytes": 11526,
      "tokenizer": {"type": "SentencePieceTokenizer", "model": "/abs/stdlib.model",
                    "model_sha256": "...", "vocab_size": 8192, "vocab_sha256": "...",
                    "eod": 2, "pad": 1, "mask": 3},
      "source": {"json_key": "text", "inputs": ["..."], "input_bytes": 10871234,
                 "skipped": {"undecodable": 1}}
    }

A tokenizer *matches* a dataset when its vocabulary size, vocabulary fingerprint
(``vocab_sha256``: the pieces in id order) and special ids equal the recorded ones. The model
file's sha256 is provenance only: a sentencepiece model and its Hugging Face export match the
same datasets.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

logger = logging.getLogger(__name__)

METADATA_FORMAT = "megatron-dlm-dataset"
METADATA_VERSION = 1
METADATA_SUFFIX = ".meta.json"


class DatasetMetadataError(ValueError):
    """Missing or unreadable metadata, or a tokenizer that does not match the dataset."""


class FingerprintedTokenizer(Protocol):
    """What the check needs from a tokenizer (``DLMTokenizer`` and ``TextEncoder`` have it)."""

    tokenizer_type: str
    vocab_size: int
    vocab_sha256: str
    model_sha256: str
    mask_id: int
    eod: int
    pad: int


@dataclass
class DatasetMetadata:
    """Contents of a ``.meta.json`` sidecar (see the module docstring)."""

    documents: int
    tokens: int
    dtype: str
    eod_appended: bool
    bin_bytes: int
    idx_bytes: int
    tokenizer: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    format: str = METADATA_FORMAT
    version: int = METADATA_VERSION

    def to_json(self) -> str:
        values = asdict(self)
        ordered = {"format": values.pop("format"), "version": values.pop("version"), **values}
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def metadata_path(prefix: str | os.PathLike) -> str:
    """``{prefix}.meta.json`` for a dataset prefix (the path without ``.bin``/``.idx``)."""
    return os.fspath(prefix) + METADATA_SUFFIX


def tokenizer_fingerprint(tokenizer: FingerprintedTokenizer, model_path: str = "") -> dict:
    """The ``tokenizer`` entry of the metadata for ``tokenizer``."""
    return {
        "type": tokenizer.tokenizer_type,
        "model": model_path or str(getattr(tokenizer, "model_path", "")),
        "model_sha256": tokenizer.model_sha256,
        "vocab_size": int(tokenizer.vocab_size),
        "vocab_sha256": tokenizer.vocab_sha256,
        "eod": int(tokenizer.eod),
        "pad": int(tokenizer.pad),
        "mask": int(tokenizer.mask_id),
    }


def write_dataset_metadata(path: str | os.PathLike, metadata: DatasetMetadata) -> None:
    """Write ``metadata`` to ``path`` (callers pick a temporary name and rename it)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(metadata.to_json())


def read_dataset_metadata(prefix: str | os.PathLike) -> DatasetMetadata:
    """Read ``{prefix}.meta.json``.

    Raises:
        DatasetMetadataError: the file is missing, not JSON, or not a version-1 sidecar; the
            message names the file.
    """
    path = metadata_path(prefix)
    if not os.path.isfile(path):
        raise DatasetMetadataError(
            f"dataset metadata {path!r} does not exist; datasets written by "
            f"tools/preprocess_data.py have one (re-run it to record the tokenizer)"
        )
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (OSError, ValueError) as exc:
        raise DatasetMetadataError(f"cannot read dataset metadata {path!r}: {exc}") from exc
    if not isinstance(values, dict) or values.get("format") != METADATA_FORMAT:
        raise DatasetMetadataError(f"{path!r} is not a Megatron-DLM dataset metadata file")
    if values.get("version") != METADATA_VERSION:
        raise DatasetMetadataError(
            f"{path!r} has metadata version {values.get('version')}; this Megatron-DLM reads "
            f"version {METADATA_VERSION}"
        )
    try:
        return DatasetMetadata(**values)
    except TypeError as exc:
        raise DatasetMetadataError(f"{path!r} is incomplete or malformed: {exc}") from exc


def check_tokenizer_matches(
    prefix: str | os.PathLike,
    tokenizer: FingerprintedTokenizer,
    require_metadata: bool = True,
) -> DatasetMetadata | None:
    """Check that ``tokenizer`` is the one the dataset at ``prefix`` was tokenized with.

    Args:
        prefix: dataset prefix (``{output_prefix}_{key}_document``).
        tokenizer: a ``DLMTokenizer`` (or ``TextEncoder``).
        require_metadata: raise if the sidecar is missing (datasets from other tools have
            none); if False, log a warning and return None instead.

    Returns:
        The dataset's metadata (None if it has none and ``require_metadata`` is False).

    Raises:
        DatasetMetadataError: the vocabulary size, vocabulary or special ids differ (the
            message names the sidecar, both tokenizers and each difference), or the sidecar
            does not describe the ``.bin``/``.idx`` next to it.
    """
    if not require_metadata and not os.path.isfile(metadata_path(prefix)):
        logger.warning(
            "%s has no metadata: cannot check that the tokenizer matches it",
            metadata_path(prefix),
        )
        return None
    metadata = read_dataset_metadata(prefix)
    for suffix, recorded_bytes in ((".bin", metadata.bin_bytes), (".idx", metadata.idx_bytes)):
        path = os.fspath(prefix) + suffix
        if os.path.isfile(path) and os.path.getsize(path) != recorded_bytes:
            raise DatasetMetadataError(
                f"{metadata_path(prefix)!r} describes a {recorded_bytes}-byte {suffix} file but "
                f"{path!r} has {os.path.getsize(path)} bytes: the files are from different "
                f"runs; re-run tools/preprocess_data.py"
            )
    recorded = metadata.tokenizer
    current = tokenizer_fingerprint(tokenizer)
    differences = [
        f"{key}: dataset {recorded.get(key)!r}, tokenizer {current[key]!r}"
        for key in ("vocab_size", "vocab_sha256", "eod", "pad", "mask")
        if recorded.get(key) != current[key]
    ]
    if differences:
        raise DatasetMetadataError(
            f"tokenizer {current['model']!r} does not match the dataset {os.fspath(prefix)!r}, "
            f"tokenized with {recorded.get('model')!r} (per {metadata_path(prefix)!r}): "
            + "; ".join(differences)
            + ". Use the dataset's tokenizer (--tokenizer-model) or preprocess the data again "
            "with this one."
        )
    return metadata
