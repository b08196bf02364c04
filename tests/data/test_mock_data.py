"""``--mock-data``: Megatron-LM's synthetic data, written as an indexed dataset and trained on
through the real data pipeline (megatron_dlm/data/mock.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from megatron_dlm.data.indexed import open_indexed_dataset, read_index
from megatron_dlm.data.metadata import check_tokenizer_matches, read_dataset_metadata
from megatron_dlm.data.mock import MOCK_DOCUMENTS, write_mock_dataset
from megatron_dlm.data.tokenizer import TokenizerOptions, load_tokenizer

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "32", "--max-position-embeddings", "32", "--micro-batch-size", "2",
    "--global-batch-size", "4", "--num-workers", "0", "--eval-iters", "1",
    "--eval-interval", "2", "--use-cpu-initialization", "--log-interval", "1", "--lr", "1e-3",
    "--tokenizer-type", "NullTokenizer", "--vocab-size", "300",
]  # fmt: skip


def _null(size: int = 300):
    return load_tokenizer(None, "NullTokenizer", TokenizerOptions(vocab_size=size))


def test_mock_dataset_is_a_checked_indexed_dataset_of_ordinary_ids(tmp_path):
    tokenizer = _null()
    prefix = write_mock_dataset(tmp_path, tokenizer, seq_length=32, seed=7)
    summary = read_index(prefix)
    assert summary.num_documents == MOCK_DOCUMENTS
    assert summary.document_lengths.min() >= 2 and summary.document_lengths.max() <= 65
    check_tokenizer_matches(prefix, tokenizer)  # the sidecar records this tokenizer
    assert read_dataset_metadata(prefix).source["mock_data"] is True
    dataset = open_indexed_dataset(prefix)
    special = {tokenizer.mask_id, tokenizer.eod, tokenizer.pad}
    for k in (0, 1, MOCK_DOCUMENTS - 1):
        ids = np.asarray(dataset[k])
        assert ids[-1] == tokenizer.eod
        assert not special & set(ids[:-1].tolist()) and ids.max() < tokenizer.vocab_size
    # the same settings give the same files (kept, not rewritten); another seed other ids
    before = Path(prefix + ".bin").read_bytes()
    assert write_mock_dataset(tmp_path, tokenizer, seq_length=32, seed=7) == prefix
    other = write_mock_dataset(tmp_path, tokenizer, seq_length=32, seed=8)
    assert Path(prefix + ".bin").read_bytes() == before != Path(other + ".bin").read_bytes()
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def _pretrain(*argv, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(REPO / "pretrain_dlm.py"), *TINY, *map(str, argv)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_pretrain_trains_and_resumes_on_mock_data(tmp_path):
    run = tmp_path / "run"
    first = _pretrain("--mock-data", "--train-iters", "2", "--save", run, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "--mock-data: 1000 synthetic documents" in first.stderr
    assert (run / "iter_0000002").is_dir() and list((run / "mock_data").glob("*.meta.json"))
    again = _pretrain("--mock-data", "--train-iters", "4", "--save", run,
                      "--override-opt-param-scheduler", cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr and (run / "iter_0000004").is_dir()

    both = _pretrain("--mock-data", "--data-path", tmp_path / "x", "--train-iters", "1",
                     "--save", tmp_path / "other", cwd=tmp_path)  # fmt: skip
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert "--mock-data replaces the data" in both.stderr and not (tmp_path / "other").exists()
