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
import os
import struct
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

_MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")
# megatron.core.datasets.indexed_dataset.DType codes.
_DTYPES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
DEFAULT_MAX_SCAN_TOKENS = 1 << 24
"""Tokens scanned for out-of-vocabulary ids (all of a dataset up to this size; ~20 ms, on every
rank, so that every rank raises the same error before the builder's collectives)."""


class DatasetError(ValueError):
    """A missing, corrupt or empty dataset, or one that does not fit the tokenizer."""


@dataclass(frozen=True)
class IndexFileSummary:
    """What a checked ``.bin``/``.idx`` pair holds.

    Attributes:
        prefix: path without ``.bin``/``.idx``.
        dtype: token dtype of the ``.bin`` file.
        sequence_lengths: tokens per sequence (= document for GPT data), shape ``[S]``.
    """

    prefix: str
    dtype: type[np.number]
    sequence_lengths: np.ndarray

    @property
    def num_sequences(self) -> int:
        return int(self.sequence_lengths.shape[0])

    @property
    def num_tokens(self) -> int:
        return int(self.sequence_lengths.sum(dtype=np.int64))


def check_indexed_dataset(prefix: str, flag: str = "--data-path") -> IndexFileSummary:
    """Check that ``{prefix}.bin/.idx`` exist, are intact and consistent, and are not empty.

    Args:
        prefix: dataset prefix.
        flag: the flag that named it (for the message).

    Raises:
        DatasetError: naming the file and the flag.
    """
    idx_path, bin_path = prefix + ".idx", prefix + ".bin"
    for path in (idx_path, bin_path):
        if not os.path.isfile(path):
            raise DatasetError(
                f"{flag} {prefix}: {path} does not exist (a dataset is a .bin/.idx pair written "
                f"by tools/preprocess_data.py; give the prefix without the suffix)"
            )
    idx_bytes = os.path.getsize(idx_path)

    def corrupt(reason: str) -> DatasetError:
        return DatasetError(
            f"{flag} {prefix}: {idx_path} is corrupt or truncated ({reason}); "
            f"preprocess the data again"
        )

    with open(idx_path, "rb") as f:
        head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise corrupt(f"{idx_bytes} bytes, shorter than the {_HEADER.size}-byte header")
    magic, version, code, num_sequences, num_boundaries = _HEADER.unpack(head)
    if magic != _MAGIC:
        raise corrupt("not a megatron-core index: bad magic bytes")
    if version != 1:
        raise corrupt(f"index version {version}, megatron-core 0.16 reads version 1")
    if code not in _DTYPES:
        raise corrupt(f"unknown token dtype code {code}")
    expected = _HEADER.size + 12 * num_sequences + 8 * num_boundaries
    if idx_bytes not in (expected, expected + num_sequences):  # + int8 modes (multimodal)
        raise corrupt(
            f"{idx_bytes} bytes where {num_sequences} sequences and {num_boundaries} document "
            f"boundaries need {expected}"
        )
    buffer = np.memmap(idx_path, dtype=np.uint8, mode="r")
    lengths = np.frombuffer(buffer, np.int32, num_sequences, _HEADER.size)
    boundaries = np.frombuffer(buffer, np.int64, num_boundaries, _HEADER.size + 12 * num_sequences)
    if (
        num_boundaries == 0
        or boundaries[0] != 0
        or boundaries[-1] != num_sequences
        or np.any(np.diff(boundaries) < 0)
        or np.any(lengths < 0)
    ):
        raise corrupt("inconsistent document boundaries or sequence lengths")
    if num_sequences == 0 or int(lengths.sum(dtype=np.int64)) == 0:
        raise DatasetError(f"{flag} {prefix}: the dataset is empty (no documents or no tokens)")
    dtype = _DTYPES[code]
    bin_expected = int(lengths.sum(dtype=np.int64)) * np.dtype(dtype).itemsize
    bin_bytes = os.path.getsize(bin_path)
    if bin_bytes != bin_expected:
        raise DatasetError(
            f"{flag} {prefix}: {bin_path} has {bin_bytes} bytes but {idx_path} describes "
            f"{bin_expected}; the pair is truncated or from different runs, preprocess again"
        )
    return IndexFileSummary(prefix=prefix, dtype=dtype, sequence_lengths=lengths)


def validate_dataset_against_tokenizer(
    prefix: str,
    tokenizer,
    *,
    flag: str = "--data-path",
    max_scan_tokens: int = DEFAULT_MAX_SCAN_TOKENS,
) -> IndexFileSummary:
    """Refuse a tokenizer whose vocabulary cannot have produced the dataset.

    Checks, cheapest first:

    1. (sidecar metadata: the place for ``megatron_dlm.data.metadata.check_tokenizer_matches``,
       which compares the vocabulary fingerprint recorded by ``tools/preprocess_data.py``.)
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
