"""megatron-core indexed datasets (``{prefix}.bin`` / ``{prefix}.idx``): check, summarise, open.

megatron-core's ``IndexedDataset`` trusts its files: a truncated ``.idx`` fails deep inside numpy
("buffer is smaller than requested size"), and a ``.bin`` shorter than the index promises is
only noticed when a sample beyond its end is read. :func:`read_index` checks both files
against each other with numpy alone (no torch or megatron-core import) and raises
:class:`IndexedDatasetError` naming the file; :func:`open_indexed_dataset` runs it before
handing the prefix to megatron-core.

The ``.idx`` layout (megatron-core 0.16, version 1), little-endian:

    b"MMIDIDX\\x00\\x00" | u64 version=1 | u8 dtype code | u64 S sequences | u64 D+1 documents
    | i32[S] sequence lengths | i64[S] byte offsets into .bin | i64[D+1] document boundaries
    (sequence indices, first 0, last S) | optional i8[S] modes (multimodal)
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

INDEX_MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, sequences, documents + 1
DTYPE_CODES = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
"""megatron-core's ``DType`` codes (``megatron.core.datasets.indexed_dataset.DType``)."""


class IndexedDatasetError(ValueError):
    """A missing, truncated or inconsistent ``.bin``/``.idx`` pair."""


@dataclass(frozen=True)
class IndexSummary:
    """What a ``.bin``/``.idx`` pair holds.

    Attributes:
        prefix: path without ``.bin``/``.idx``.
        dtype: token dtype in the ``.bin`` file.
        num_documents: documents (a document is one or more sequences).
        num_sequences: sequences (one per document for text written by preprocess_data).
        num_tokens: tokens in the ``.bin`` file.
        document_lengths: tokens per document, shape ``[num_documents]``.
        sequence_lengths: tokens per sequence, shape ``[num_sequences]``.
        idx_bytes: size of the ``.idx`` file.
        bin_bytes: size of the ``.bin`` file.
    """

    prefix: str
    dtype: np.dtype
    num_documents: int
    num_sequences: int
    num_tokens: int
    document_lengths: np.ndarray
    sequence_lengths: np.ndarray
    idx_bytes: int
    bin_bytes: int


def optimal_token_dtype(vocab_size: int) -> type[np.integer]:
    """The ``.bin`` dtype megatron-core's ``DType.optimal_dtype`` picks for a vocabulary."""
    return np.uint16 if vocab_size is not None and vocab_size < 65500 else np.int32


def dataset_paths(prefix: str) -> tuple[str, str]:
    """``(prefix.bin, prefix.idx)``."""
    return prefix + ".bin", prefix + ".idx"


def read_index(prefix: str | os.PathLike) -> IndexSummary:
    """Read and check ``{prefix}.idx`` against ``{prefix}.bin`` (numpy only).

    Raises:
        IndexedDatasetError: a file is missing, the index is truncated or corrupt, or the
            ``.bin`` size differs from what the index describes. The message names the file.
    """
    prefix = os.fspath(prefix)
    bin_path, idx_path = dataset_paths(prefix)
    for path in (idx_path, bin_path):
        if not os.path.isfile(path):
            raise IndexedDatasetError(
                f"dataset file {path!r} does not exist (a dataset prefix names a .bin/.idx "
                f"pair written by tools/preprocess_data.py, e.g. data/corpus_text_document)"
            )
    redo = "re-run tools/preprocess_data.py to rebuild it"
    idx_bytes = os.path.getsize(idx_path)
    bin_bytes = os.path.getsize(bin_path)
    if idx_bytes < _HEADER.size:
        raise IndexedDatasetError(
            f"{idx_path!r} is truncated ({idx_bytes} bytes, shorter than the "
            f"{_HEADER.size}-byte header); {redo}"
        )
    with open(idx_path, "rb") as f:
        magic, version, code, n_seq, n_doc1 = _HEADER.unpack(f.read(_HEADER.size))
    if magic != INDEX_MAGIC:
        raise IndexedDatasetError(f"{idx_path!r} is not a megatron-core index (bad header)")
    if version != 1 or code not in DTYPE_CODES:
        raise IndexedDatasetError(
            f"{idx_path!r}: unsupported index (version {version}, dtype code {code}); {redo}"
        )
    if n_doc1 < 1:
        raise IndexedDatasetError(f"{idx_path!r} is corrupt (no document boundaries); {redo}")
    expected = _HEADER.size + 12 * n_seq + 8 * n_doc1
    if idx_bytes not in (expected, expected + n_seq):  # + i8 modes when multimodal
        raise IndexedDatasetError(
            f"{idx_path!r} is truncated or corrupt: {idx_bytes} bytes, but its header "
            f"({n_seq} sequences, {n_doc1 - 1} documents) needs {expected}; {redo}"
        )
    dtype = np.dtype(DTYPE_CODES[code])
    raw = np.memmap(idx_path, dtype=np.uint8, mode="r")
    offset = _HEADER.size
    lengths = np.frombuffer(raw, np.int32, n_seq, offset)
    pointers = np.frombuffer(raw, np.int64, n_seq, offset + 4 * n_seq)
    documents = np.frombuffer(raw, np.int64, n_doc1, offset + 12 * n_seq)
    bad = (
        (n_seq and (lengths.min() < 0 or pointers[0] != 0))
        or documents[0] != 0
        or documents[-1] != n_seq
        or np.any(np.diff(documents) < 0)
    )
    if not bad and n_seq:
        ends = np.cumsum(lengths, dtype=np.int64) * dtype.itemsize
        bad = not np.array_equal(pointers[1:], ends[:-1])
    if bad:
        raise IndexedDatasetError(f"{idx_path!r} is corrupt (inconsistent offsets); {redo}")
    num_tokens = int(lengths.sum(dtype=np.int64))
    if bin_bytes != num_tokens * dtype.itemsize:
        raise IndexedDatasetError(
            f"{bin_path!r} has {bin_bytes} bytes, but {idx_path!r} describes {num_tokens} "
            f"{dtype.name} tokens ({num_tokens * dtype.itemsize} bytes): the pair is truncated "
            f"or from different runs; {redo}"
        )
    seq_ends = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    document_lengths = np.diff(seq_ends[documents])
    summary = IndexSummary(
        prefix=prefix,
        dtype=dtype,
        num_documents=int(n_doc1 - 1),
        num_sequences=int(n_seq),
        num_tokens=num_tokens,
        document_lengths=document_lengths,
        sequence_lengths=np.array(lengths),
        idx_bytes=idx_bytes,
        bin_bytes=bin_bytes,
    )
    del raw
    return summary


def indexed_dataset_module():
    """megatron-core's ``megatron.core.datasets.indexed_dataset`` module, imported cheaply.

    Importing it the usual way runs ``megatron/core/__init__.py``, which imports most of
    megatron-core (tensor parallel layers, transformer, inference, wandb: ~4.5 s and ~1 s more
    at interpreter exit). The module itself needs torch and three small modules. When
    megatron-core is not imported yet, this loads the same file with bare parent packages and
    with ``megatron.core.utils`` reduced to the one function it uses (``log_single_rank``, taken
    from ``megatron.core._rank_utils`` where megatron-core defines it): ~1 s, torch included.
    ``sys.modules`` is restored afterwards, so a later ``import megatron.core`` is unaffected.
    Falls back to the usual import if megatron-core is already imported or the light load fails
    (a megatron-core release whose module needs more).
    """
    import importlib
    import sys

    if "megatron.core" not in sys.modules:
        try:
            return _import_without_package_init()
        except Exception as exc:  # fall back below; nothing of the light load is kept
            logger.debug("light import of megatron-core's indexed_dataset failed: %r", exc)
    return importlib.import_module("megatron.core.datasets.indexed_dataset")


def _import_without_package_init():
    import importlib
    import importlib.util
    import sys
    import types

    before = set(sys.modules)
    try:
        spec = importlib.util.find_spec("megatron.core")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("megatron-core is not installed")
        core_dir = list(spec.submodule_search_locations)[0]
        packages = {"megatron.core": core_dir, "megatron.core.datasets": f"{core_dir}/datasets"}
        for name, path in packages.items():
            package = types.ModuleType(name)
            package.__path__ = [path]
            sys.modules[name] = package
        rank_utils = importlib.import_module("megatron.core._rank_utils")
        utils = types.ModuleType("megatron.core.utils")
        utils.log_single_rank = rank_utils.log_single_rank
        sys.modules["megatron.core.utils"] = utils
        return importlib.import_module("megatron.core.datasets.indexed_dataset")
    finally:
        for name in list(sys.modules):
            if (name == "megatron.core" or name.startswith("megatron.core.")) and (
                name not in before
            ):
                del sys.modules[name]


def open_indexed_dataset(prefix: str | os.PathLike, mmap: bool = True):
    """megatron-core's ``IndexedDataset`` for ``prefix``, after :func:`read_index` checked it.

    Args:
        prefix: path without ``.bin``/``.idx``.
        mmap: memory-map the ``.bin`` file (else read it on demand with file reads).

    Returns:
        ``megatron.core.datasets.indexed_dataset.IndexedDataset``.

    Raises:
        IndexedDatasetError: see :func:`read_index`.
    """
    read_index(prefix)
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    return IndexedDataset(os.fspath(prefix), multimodal=False, mmap=mmap)
