"""Dataset metadata: the ``{prefix}.meta.json`` sidecar written next to ``{prefix}.bin/.idx``.

tools/preprocess_data.py records which tokenizer produced the token ids, so that training can
refuse a tokenizer whose vocabulary differs from the dataset's (the ids would mean other
tokens, silently). Format (version 2; docs/data-tools.md)::

    {
      "format": "megatron-dlm-dataset", "version": 2,
      "documents": 573, "tokens": 2794521, "dtype": "uint16", "eod_appended": true,
      "bin_bytes": 5589042, "idx_bytes": 11526,
      "tokenizer": {"vocab_size": 8192, "mask_id": 3, "eod_id": 2, "pad_id": 1,
                    "type": "SentencePieceTokenizer", "model": "/abs/stdlib.model",
                    "vocab_sha256": "...", "model_sha256": "..."},
      "source": {"json_key": "text", "inputs": ["..."], "input_bytes": 10871234,
                 "skipped": {"undecodable": 1}}
    }

The ``tokenizer`` entry is a :class:`~megatron_dlm.checkpoint.TokenizerRecord`, the same record
checkpoints hold (version 1 files named the ids ``eod``, ``pad``, ``mask``; they still read). A
tokenizer *matches* a dataset when its vocabulary size, vocabulary fingerprint (``vocab_sha256``:
the pieces in id order) and special ids equal the recorded ones. The model file's sha256 is
provenance only: a sentencepiece model and its Hugging Face export match the same datasets.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from megatron_dlm.checkpoint import CheckpointError, TokenizerRecord
from megatron_dlm.checkpoint.tokenizer_record import FingerprintedTokenizer

logger = logging.getLogger(__name__)

METADATA_FORMAT = "megatron-dlm-dataset"
METADATA_VERSION = 2
READABLE_VERSIONS = (1, 2)
METADATA_SUFFIX = ".meta.json"


class DatasetMetadataError(ValueError):
    """Missing or unreadable metadata, or a tokenizer that does not match the dataset."""


@dataclass
class DatasetMetadata:
    """Contents of a ``.meta.json`` sidecar (see the module docstring)."""

    documents: int
    tokens: int
    dtype: str
    eod_appended: bool
    bin_bytes: int
    idx_bytes: int
    tokenizer: TokenizerRecord
    source: dict[str, Any] = field(default_factory=dict)
    format: str = METADATA_FORMAT
    version: int = METADATA_VERSION

    def to_json(self) -> str:
        values = asdict(self)  # the record becomes a dict too
        ordered = {"format": values.pop("format"), "version": values.pop("version"), **values}
        return json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"


def metadata_path(prefix: str | os.PathLike) -> str:
    """``{prefix}.meta.json`` for a dataset prefix (the path without ``.bin``/``.idx``)."""
    return os.fspath(prefix) + METADATA_SUFFIX


def tokenizer_fingerprint(
    tokenizer: FingerprintedTokenizer, model_path: str = ""
) -> TokenizerRecord:
    """The ``tokenizer`` entry of the metadata for ``tokenizer``."""
    return TokenizerRecord.from_tokenizer(tokenizer, model_path)


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
    if values.get("version") not in READABLE_VERSIONS:
        raise DatasetMetadataError(
            f"{path!r} has metadata version {values.get('version')}; this Megatron-DLM reads "
            f"versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    try:
        values["tokenizer"] = TokenizerRecord.from_dict(values.get("tokenizer"), repr(path))
        values["version"] = METADATA_VERSION
        return DatasetMetadata(**values)
    except (TypeError, CheckpointError) as exc:
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
            "%s has no metadata (a dataset from Megatron-LM's tools/preprocess_data.py, say): "
            "the tokenizer it was written with cannot be verified; trusting the tokenizer "
            "flags (--tokenizer-type %s, %s), checking only that its ids are in the vocabulary",
            metadata_path(prefix),
            getattr(tokenizer, "tokenizer_type", "?"),
            getattr(tokenizer, "model_path", None) or "no model file",
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
        f"{name}: dataset {theirs!r}, tokenizer {mine!r}"
        for name, mine, theirs in current.differences(recorded)
    ]
    if differences:
        raise DatasetMetadataError(
            f"tokenizer {current.model!r} does not match the dataset {os.fspath(prefix)!r}, "
            f"tokenized with {recorded.model!r} (per {metadata_path(prefix)!r}): "
            + "; ".join(differences)
            + ". Use the dataset's tokenizer (--tokenizer-model) or preprocess the data again "
            "with this one."
        )
    return metadata
