"""Corpora: file selection, the standard library, the train/valid split, and the quickstart
datasets built from it."""

from __future__ import annotations

import re

import pytest

from megatron_dlm.data.corpus import (
    collect_corpus,
    find_source_files,
    glob_to_regex,
    split_files,
    split_fraction,
    split_of,
    stdlib_dir,
    stdlib_files,
)
from megatron_dlm.data.indexed import read_index
from tests.data.conftest import run_tool


@pytest.mark.parametrize(
    "pattern, matches, misses",
    [
        ("**/*.py", ["a.py", "x/a.py", "x/y/a.py"], ["a.pyc", "a.py/b"]),
        ("*.py", ["a.py"], ["x/a.py"]),
        ("x/**", ["x/a", "x/y/z.py"], ["xa", "y/x/a"]),
        ("**/tests", ["tests", "a/tests"], ["a/tests/b", "atests"]),
        ("test_?.py", ["test_a.py"], ["test_ab.py"]),
        ("[!_]*.py", ["a.py"], ["_a.py"]),
    ],
)  # fmt: skip
def test_globs(pattern, matches, misses):
    regex = glob_to_regex(pattern)
    assert all(regex.fullmatch(m) for m in matches)
    assert not any(regex.fullmatch(m) for m in misses)


def test_find_source_files_order_include_exclude(edge_dir):
    files = find_source_files(edge_dir, exclude=["**/tests"])
    rels = [f.relpath for f in files]
    assert rels == sorted(rels)
    assert "sub/deep/module.py" in rels and "notes.txt" not in rels
    assert not any("tests" in r for r in rels)
    assert [f.relpath for f in find_source_files(edge_dir, ["*.txt"])] == ["notes.txt"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_source_files(edge_dir / "missing")


def test_stdlib_files():
    files = stdlib_files()
    rels = {f.relpath for f in files}
    assert {"json/decoder.py", "os.py", "email/parser.py"} <= rels
    assert not any(re.match(r"(test|idlelib|lib2to3|site-packages)/", r) for r in rels)
    assert not any("/tests/" in r or "/test/" in r for r in rels)
    assert all(f.root == stdlib_dir() for f in files)
    with_tests = {f.relpath for f in stdlib_files(with_tests=True)}
    assert rels < with_tests and "test/test_json/test_decode.py" in with_tests
    assert not any(r.startswith("site-packages/") for r in with_tests)


def test_split_is_disjoint_complete_and_stable():
    files = stdlib_files()
    train, valid = split_files(files, 0.1)
    assert {f.relpath for f in train}.isdisjoint(f.relpath for f in valid)
    assert sorted(train + valid) == sorted(files)
    assert 0.05 < len(valid) / len(files) < 0.15
    assert split_files(files, 0.1) == (train, valid)
    # Pinned values: the split must not change across machines and Python versions.
    assert split_fraction("json/decoder.py") == pytest.approx(0.650539, abs=1e-6)
    assert split_fraction("os.py") == pytest.approx(0.055581, abs=1e-6)
    assert [split_of(p, 0.1) for p in ("os.py", "json/decoder.py", "abc.py")] == [
        "valid", "train", "train",
    ]  # fmt: skip
    # Adding a file never moves another across the split.
    assert split_files(files[:100], 0.1)[1] == [f for f in valid if f in files[:100]]


def test_quickstart_train_and_valid_datasets_share_no_file(tmp_path, sp_model):
    """The quickstart commands: the stdlib split into two datasets with no file in common."""
    prefixes = {}
    for part in ("train", "valid"):
        result = run_tool(
            "tools/preprocess_data.py", "--stdlib", "--corpus-split", part,
            "--valid-fraction", "0.05", "--tokenizer-model", str(sp_model),
            "--output-prefix", str(tmp_path / f"stdlib_{part}"), "--workers", "2",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        prefixes[part] = str(tmp_path / f"stdlib_{part}_text_document")
    train = collect_corpus(stdlib=True, split="train", valid_fraction=0.05)
    valid = collect_corpus(stdlib=True, split="valid", valid_fraction=0.05)
    assert set(train).isdisjoint(valid) and len(train) + len(valid) == len(stdlib_files())
    non_empty = {f for f in train + valid if f.path.stat().st_size > 0}
    assert read_index(prefixes["train"]).num_documents == len(non_empty & set(train))
    assert read_index(prefixes["valid"]).num_documents == len(non_empty & set(valid)) > 10
