"""tools/preprocess_data.py: exact round trip, worker-count independence, bad input, atomicity."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from megatron_dlm.data.corpus import collect_corpus, stdlib_dir
from megatron_dlm.data.indexed import open_indexed_dataset, read_index
from megatron_dlm.data.metadata import read_dataset_metadata
from megatron_dlm.data.preprocess import (
    PreprocessError,
    PreprocessOptions,
    preprocess_files,
    preprocess_jsonl,
)
from tests.data.conftest import REPO, SKIPPED_FILES, STDLIB_SUBSET, run_tool

SUFFIXES = (".bin", ".idx", ".meta.json")


def input_dirs(edge_dir) -> list[str]:
    return [str(stdlib_dir() / name) for name in STDLIB_SUBSET] + [str(edge_dir)]


def preprocess_cli(prefix, sp_model, edge_dir, workers: int) -> subprocess.CompletedProcess:
    return run_tool(
        "tools/preprocess_data.py",
        "--input-dir", *input_dirs(edge_dir),
        "--exclude", "**/tests", "**/test",
        "--tokenizer-model", str(sp_model),
        "--output-prefix", str(prefix),
        "--workers", str(workers),
        "--log-interval", "50",
    )  # fmt: skip


@pytest.fixture(scope="module")
def expected_files(edge_dir):
    """The files the CLI call above selects, in document order."""
    files = collect_corpus(input_dirs(edge_dir), exclude=["**/tests", "**/test"])
    texts = []
    for f in files:
        data = f.path.read_bytes()
        if data and b"\x00" not in data:
            with contextlib.suppress(UnicodeDecodeError):
                texts.append((f, data.decode("utf-8")))
    return texts


@pytest.fixture(scope="module")
def w1(tmp_path_factory, sp_model, edge_dir):
    prefix = tmp_path_factory.mktemp("w1") / "corpus"
    result = preprocess_cli(prefix, sp_model, edge_dir, workers=1)
    assert result.returncode == 0, result.stderr
    return prefix, result


def test_every_document_decodes_to_its_source_file(w1, expected_files, sp_tokenizer, sp_model):
    import sentencepiece

    prefix, result = w1
    dataset = open_indexed_dataset(f"{prefix}_text_document")  # megatron-core IndexedDataset
    assert len(dataset) == len(expected_files) > 50
    non_ascii = byte_tokens = 0
    is_byte = sentencepiece.SentencePieceProcessor(model_file=str(sp_model)).is_byte
    for i, (source, text) in enumerate(expected_files):
        ids = dataset[i]
        assert ids.dtype == np.uint16 and ids[-1] == sp_tokenizer.eod, source.relpath
        assert sp_tokenizer.detokenize(ids[:-1].tolist()) == text, source.relpath
        non_ascii += any(ord(c) > 127 for c in text)
        byte_tokens += sum(map(is_byte, ids.tolist()))
    assert non_ascii >= 8  # standard-library files with non-ASCII text, and the edge files
    assert byte_tokens > 0  # characters without a piece went through byte fallback
    # The CLI reports what it did.
    out = result.stdout
    assert re.search(rf"documents: {len(expected_files):,}  tokens: [\d,]+", out), out
    assert re.search(r"skipped: \d+ \(binary 1, empty \d+, undecodable 1\)", out), out
    assert "latin1.py" in out and "binary.py" in out
    assert re.search(r"processed 50 documents \([\d.]+ docs/s, [\d.]+M tokens/s", result.stderr)


def test_two_workers_write_byte_identical_output(w1, tmp_path, sp_model, edge_dir):
    prefix1, _ = w1
    prefix2 = tmp_path / "corpus"
    result = preprocess_cli(prefix2, sp_model, edge_dir, workers=2)
    assert result.returncode == 0, result.stderr
    for suffix in SUFFIXES:
        a = (prefix1.parent / f"corpus_text_document{suffix}").read_bytes()
        b = (tmp_path / f"corpus_text_document{suffix}").read_bytes()
        assert a == b, suffix


def test_metadata_records_the_tokenizer_and_counts(w1, sp_tokenizer):
    prefix, _ = w1
    dataset_prefix = f"{prefix}_text_document"
    meta = read_dataset_metadata(dataset_prefix)
    summary = read_index(dataset_prefix)
    assert (meta.documents, meta.tokens) == (summary.num_documents, summary.num_tokens)
    assert meta.eod_appended and meta.dtype == "uint16"
    assert meta.tokenizer.vocab_sha256 == sp_tokenizer.vocab_sha256
    assert meta.tokenizer.model_sha256 == sp_tokenizer.model_sha256
    assert (meta.tokenizer.eod_id, meta.tokenizer.pad_id, meta.tokenizer.mask_id) == (2, 1, 3)
    assert meta.source["skipped"]["binary"] == 1


def options(prefix, sp_model, **kwargs) -> PreprocessOptions:
    return PreprocessOptions(
        output_prefix=str(prefix), tokenizer_model=str(sp_model), progress_bar=False, **kwargs
    )


def test_jsonl_with_several_keys(tmp_path, sp_model, sp_tokenizer, corpus_texts):
    records = [{"text": t, "code": t[::-1]} for t in corpus_texts[:20]]
    records[3].pop("code")  # missing key: skipped for "code" only
    records[5]["code"] = 42  # not text
    first = tmp_path / "a.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in records[:10]) + "\n")  # blank line
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records[10:])
    summary = preprocess_jsonl(
        [first, tmp_path / "b.jsonl.gz"],
        ["text", "code"],
        options(tmp_path / "out", sp_model, workers=2, append_eod=False),
    )
    assert summary.documents == {"text": 20, "code": 18}
    assert summary.skipped == {"missing_key": 1, "not_text": 1}
    text = open_indexed_dataset(tmp_path / "out_text_document")
    code = open_indexed_dataset(tmp_path / "out_code_document")
    assert [sp_tokenizer.detokenize(text[i].tolist()) for i in range(20)] == corpus_texts[:20]
    expected_code = [r["code"] for r in records if isinstance(r.get("code"), str)]
    assert [sp_tokenizer.detokenize(code[i].tolist()) for i in range(18)] == expected_code
    assert sp_tokenizer.eod not in text[0]  # --no-append-eod


def assert_no_partial_files(directory):
    leftovers = [p.name for p in directory.rglob("*") if ".partial-" in p.name]
    assert leftovers == []


def test_invalid_json_names_file_and_line_and_writes_nothing(tmp_path, sp_model):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(PreprocessError, match=r"bad\.jsonl:3: not valid JSON"):
        preprocess_jsonl([path], ["text"], options(tmp_path / "out", sp_model))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


def test_failed_run_keeps_an_existing_dataset(w1, tmp_path, sp_model, edge_dir):
    """A failure never clobbers a good dataset: here every input file must be skipped."""
    prefix1, _ = w1
    for suffix in SUFFIXES:
        shutil.copy(f"{prefix1}_text_document{suffix}", tmp_path / f"out_text_document{suffix}")
    before = {s: (tmp_path / f"out_text_document{s}").read_bytes() for s in SUFFIXES}
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, data in SKIPPED_FILES.items():
        (bad / name).write_bytes(data)
    files = collect_corpus([bad])
    with pytest.raises(PreprocessError, match=r"every input was skipped.*binary.*undecodable"):
        preprocess_files(files, options(tmp_path / "out", sp_model))
    assert {s: (tmp_path / f"out_text_document{s}").read_bytes() for s in SUFFIXES} == before
    assert_no_partial_files(tmp_path)


def test_cli_errors_name_the_problem(tmp_path, sp_model, plain_sp_model, edge_dir):
    def cli(*args):
        return run_tool("tools/preprocess_data.py", "--output-prefix", str(tmp_path / "o"), *args)

    (tmp_path / "empty").mkdir()
    cases = {
        "no input files": cli("--input-dir", str(tmp_path / "empty"),
                              "--tokenizer-model", str(sp_model)),
        "--input 'missing.jsonl' does not exist": cli("--input", "missing.jsonl",
                                                      "--tokenizer-model", str(sp_model)),
        "nope' does not exist": cli("--input-dir", str(tmp_path / "nope"),
                                    "--tokenizer-model", str(sp_model)),
        "lacks the special token(s) <|mask|>": cli("--input-dir", str(edge_dir),
                                                   "--tokenizer-model", str(plain_sp_model)),
        "(--tokenizer-model) does not exist": cli("--input-dir", str(edge_dir),
                                                  "--tokenizer-model", "no.model"),
    }  # fmt: skip
    for message, result in cases.items():
        assert result.returncode == 1, (message, result.stderr)
        assert message in result.stderr
    usage = cli("--tokenizer-model", str(sp_model))
    assert usage.returncode == 2 and "give the input" in usage.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


@pytest.mark.parametrize(
    "signum",
    [
        pytest.param(signal.SIGINT, id="ctrl-c"),
        pytest.param(signal.SIGTERM, id="sigterm"),
    ],
)
def test_interrupt_leaves_no_partial_output_and_the_old_dataset(w1, tmp_path, sp_model, signum):
    """Ctrl-C (or SIGTERM from a scheduler) while the builder writes: nothing half-written."""
    prefix1, _ = w1
    for suffix in SUFFIXES:
        shutil.copy(f"{prefix1}_text_document{suffix}", tmp_path / f"out_text_document{suffix}")
    before = {s: (tmp_path / f"out_text_document{s}").read_bytes() for s in SUFFIXES}
    proc = subprocess.Popen(
        [sys.executable, "tools/preprocess_data.py", "--stdlib-with-tests", "--workers", "1",
         "--tokenizer-model", str(sp_model), "--output-prefix", str(tmp_path / "out")],
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a suite started in the background of a non-interactive shell
        # inherits SIGINT ignored, and Python then leaves Ctrl-C ignored in its children.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*.partial-*.bin")):  # the builder is writing
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: no output written" in err and "Traceback" not in err, err
    assert_no_partial_files(tmp_path)
    assert {s: (tmp_path / f"out_text_document{s}").read_bytes() for s in SUFFIXES} == before
