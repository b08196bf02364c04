"""Checked reading of .bin/.idx pairs: clear errors for missing, truncated or corrupt files."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from megatron_dlm.data.indexed import IndexedDatasetError, open_indexed_dataset, read_index
from tests.data.conftest import run_tool


@pytest.fixture
def copy(dataset_prefix, tmp_path):
    prefix = str(tmp_path / "d")
    for suffix in (".bin", ".idx"):
        shutil.copy(dataset_prefix + suffix, prefix + suffix)
    return prefix


def test_summary_matches_megatron_core(dataset_prefix):
    summary = read_index(dataset_prefix)
    dataset = open_indexed_dataset(dataset_prefix)
    assert summary.num_documents == summary.num_sequences == len(dataset)
    lengths = np.array([len(dataset[i]) for i in range(len(dataset))])
    assert np.array_equal(summary.document_lengths, lengths)
    assert summary.num_tokens == lengths.sum() and summary.dtype == np.uint16


def truncate(path: str, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def corrupt(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: truncate(p + ".idx", 100), r"d\.idx' is truncated or corrupt: 100 bytes"),
        (lambda p: truncate(p + ".idx", 5), r"d\.idx' is truncated \(5 bytes"),
        (lambda p: corrupt(p + ".idx", 0, b"NOTANIDX"), r"d\.idx' is not a megatron-core index"),
        (lambda p: corrupt(p + ".idx", 17, b"\x63"), r"d\.idx': unsupported index"),
        (lambda p: corrupt(p + ".idx", 34 + 4 * 10, b"\x07"), r"d\.idx' is corrupt"),
        (lambda p: truncate(p + ".bin", 1000), r"d\.bin' has 1000 bytes, but .*d\.idx' describes"),
        (lambda p: truncate(p + ".idx", 0), r"d\.idx' is truncated \(0 bytes"),
    ],
    ids=["idx-truncated", "idx-header-cut", "bad-magic", "bad-dtype", "bad-offsets", "bin-cut",
         "idx-empty"],
)  # fmt: skip
def test_damaged_files_get_a_clear_error(copy, damage, message):
    damage(copy)
    with pytest.raises(IndexedDatasetError, match=message):
        read_index(copy)
    with pytest.raises(IndexedDatasetError, match=message):
        open_indexed_dataset(copy)


def test_megatron_core_alone_fails_obscurely_on_a_truncated_index(copy):
    """Why open_indexed_dataset checks first: megatron-core reports a numpy buffer error."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    truncate(copy + ".idx", 100)
    with pytest.raises(ValueError, match="buffer is smaller than requested size"):
        IndexedDataset(copy)


def test_missing_files_are_named(copy):
    import os

    os.remove(copy + ".bin")
    with pytest.raises(IndexedDatasetError, match=r"d\.bin' does not exist"):
        read_index(copy)
    result = run_tool("tools/dataset_info.py", copy)
    assert result.returncode == 1 and "d.bin' does not exist" in result.stderr


LIGHT_IMPORT_CHECK = """
import sys, numpy as np
from megatron_dlm.data.indexed import indexed_dataset_module, read_index
light = indexed_dataset_module()
assert "megatron.core" not in sys.modules and "megatron.core.utils" not in sys.modules
assert light.__file__.endswith("megatron/core/datasets/indexed_dataset.py"), light.__file__
import megatron.core  # the real package still imports, untouched
from megatron.core.datasets import indexed_dataset as real
assert real is not light and real.__file__ == light.__file__
for module, prefix in ((light, sys.argv[1] + "/light"), (real, sys.argv[1] + "/real")):
    builder = module.IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for n in (3, 1, 4):
        builder.add_document(np.arange(n, dtype=np.uint16), [n])
    builder.finalize(prefix + ".idx")
    assert read_index(prefix).num_tokens == 8
print("ok")
"""


def test_light_import_of_megatron_cores_builder(tmp_path):
    """preprocess_data.py imports the builder without megatron/core/__init__.py (~4 s)."""
    result = run_tool("-c", LIGHT_IMPORT_CHECK, str(tmp_path))
    assert result.stdout.strip() == "ok", result.stderr
    for suffix in (".bin", ".idx"):
        light = (tmp_path / f"light{suffix}").read_bytes()
        assert light == (tmp_path / f"real{suffix}").read_bytes()
