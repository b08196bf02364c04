"""Checks that run before megatron-core opens a dataset: files, index integrity, tokenizer.

megatron-core's ``IndexedDataset`` trusts its files: a missing file is an ``AssertionError``, a
truncated ``.idx`` fails inside numpy ("buffer is smaller than requested size") and a short
``.bin`` only when a sample past its end is read. These checks read the ``.idx`` header and
arrays with numpy (no torch) and raise :class:`DatasetError` naming the file and the flag.

``.idx`` layout (megatron-core 0.16, version 1), little-endian::

    b"MMIDIDX\\x00\\x00" | u64 version | u8 dtype code | u64 S sequences | u64 D+1 boundaries
    | i32[S] sequence lengths | i64[S] byte offsets | i64[D+1] document boundaries
    | optional i8[S] modes (multimodal)
"""

from __future__ import annotations

import logging

import numpy as np

from megatron_dlm.data.indexed import IndexedDatasetError, IndexSummary, read_index
from megatron_dlm.data.metadata import DatasetMetadataError, check_tokenizer_matches

logger = logging.getLogger(__name__)

DEFAULT_MAX_SCAN_TOKENS = 1 << 24
"""Tokens scanned for out-of-vocabulary ids (all of a dataset up to this size; ~20 ms, on every
rank, so that every rank raises the same error before the builder's collectives)."""


class DatasetError(ValueError):
    """A missing, corrupt or empty dataset, or one that does not fit the tokenizer."""


IndexFileSummary = IndexSummary
"""What a checked ``.bin``/``.idx`` pair holds (``megatron_dlm.data.indexed.IndexSummary``)."""


def check_indexed_dataset(prefix: str, flag: str = "--data-path") -> IndexSummary:
    """Check that ``{prefix}.bin/.idx`` exist, are intact and consistent, and are not empty.

    Args:
        prefix: dataset prefix.
        flag: the flag that named it (for the message).

    Raises:
        DatasetError: naming the file and the flag.
    """
    try:
        summary = read_index(prefix)
    except IndexedDatasetError as exc:
        raise DatasetError(f"{flag} {prefix}: {exc}") from exc
    if summary.num_sequences == 0 or summary.num_tokens == 0:
        raise DatasetError(f"{flag} {prefix}: the dataset is empty (no documents or no tokens)")
    return summary


def validate_dataset_against_tokenizer(
    prefix: str,
    tokenizer,
    *,
    flag: str = "--data-path",
    max_scan_tokens: int = DEFAULT_MAX_SCAN_TOKENS,
) -> IndexFileSummary:
    """Refuse a tokenizer whose vocabulary cannot have produced the dataset.

    Checks, cheapest first:

    1. The sidecar metadata written by ``tools/preprocess_data.py`` (vocabulary fingerprint and
       special ids), when the dataset has one and the tokenizer is a ``DLMTokenizer``.
    2. The token dtype: a ``uint16``/``uint8`` dataset cannot come from a larger vocabulary;
       a wider dtype than the vocabulary needs is only logged (other tools write ``int32``).
    3. Every token id is ``< tokenizer.vocab_size``: the whole ``.bin`` for datasets of up to
       ``max_scan_tokens`` tokens, else its first ``max_scan_tokens`` tokens.

    Args:
        prefix: dataset prefix (checked with :func:`check_indexed_dataset` first).
        tokenizer: anything with ``vocab_size``.
        flag: the flag that named the dataset (for the message).
        max_scan_tokens: scan limit for check 3 (0 disables it).

    Returns:
        The checked dataset's :class:`IndexFileSummary`.

    Raises:
        DatasetError: naming the file, the flag and the ids.
    """
    summary = check_indexed_dataset(prefix, flag)
    if hasattr(tokenizer, "vocab_sha256"):  # a DLMTokenizer: compare with the sidecar, if any
        try:
            check_tokenizer_matches(prefix, tokenizer, require_metadata=False)
        except DatasetMetadataError as exc:
            raise DatasetError(f"{flag} {prefix}: {exc}") from exc
    vocab_size = int(tokenizer.vocab_size)
    info = np.iinfo(summary.dtype) if np.issubdtype(summary.dtype, np.integer) else None
    if info is None:
        raise DatasetError(f"{flag} {prefix}: {prefix}.idx stores {summary.dtype} tokens")
    if info.max + 1 < vocab_size:
        raise DatasetError(
            f"{flag} {prefix}: {prefix}.bin stores {np.dtype(summary.dtype).name} token ids "
            f"(at most {info.max + 1} distinct) but the tokenizer (--tokenizer-model) has "
            f"{vocab_size} ids: the dataset was written with another tokenizer"
        )
    if vocab_size <= np.iinfo(np.uint16).max + 1 and info.max > np.iinfo(np.uint16).max:
        logger.info(
            "%s stores %s ids for a %d-token vocabulary (uint16 would do)",
            prefix,
            np.dtype(summary.dtype).name,
            vocab_size,
        )
    if max_scan_tokens <= 0:
        return summary
    count = min(summary.num_tokens, max_scan_tokens)
    tokens = np.memmap(prefix + ".bin", dtype=summary.dtype, mode="r", shape=(count,))
    chunk = 1 << 24
    for start in range(0, count, chunk):
        part = tokens[start : start + chunk]
        high, low = int(part.max()), int(part.min())
        if high >= vocab_size or low < 0:
            bad = high if high >= vocab_size else low
            position = start + int(np.argmax(part == bad))
            raise DatasetError(
                f"{flag} {prefix}: {prefix}.bin holds token id {bad} (at token {position}) "
                f"outside the tokenizer's vocabulary of {vocab_size} ids (--tokenizer-model): "
                f"the dataset was written with another tokenizer"
            )
    if count < summary.num_tokens:
        logger.info(
            "%s: checked token ids of the first %d of %d tokens against the tokenizer",
            prefix,
            count,
            summary.num_tokens,
        )
    return summary
