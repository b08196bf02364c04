"""Nothing of a document is lost: preprocess -> megatron-core IndexedDataset -> detokenize gives
the source text back, byte for byte, for every document of a real corpus, including those that
contain sentencepiece's whitespace marker "▁" as text (rich's spinner frames, sparklines)."""

from __future__ import annotations

import contextlib
import shutil
import sysconfig
from pathlib import Path

import pytest

from megatron_dlm.data.corpus import collect_corpus
from megatron_dlm.data.indexed import open_indexed_dataset
from megatron_dlm.data.tokenizer import SENTENCEPIECE_SPACE
from tests.data.conftest import run_tool

MARKER = SENTENCEPIECE_SPACE.encode("utf-8")
# Installed files known to hold "▁" as text (whichever of them this environment has).
KNOWN_MARKER_FILES = (
    "rich/_spinners.py",
    "pip/_vendor/rich/_spinners.py",
    "wandb/sdk/lib/sparkline.py",
    "transformers/convert_slow_tokenizer.py",
    "tokenizers/implementations/sentencepiece_unigram.py",
)


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def copy_marker_files(paths: list[Path], into: Path) -> Path:
    """Copy files holding "▁" into one folder (a corpus preprocess_data.py can read)."""
    into.mkdir()
    for k, path in enumerate(paths):
        shutil.copyfile(path, into / f"{k:03d}_{path.name}")
    return into


def documents(files) -> list[tuple[str, str]]:
    """(name, text) of the files preprocess_data.py writes, in its order (same skip rules)."""
    out = []
    for f in files:
        data = f.path.read_bytes()
        if data and b"\x00" not in data:
            with contextlib.suppress(UnicodeDecodeError):
                out.append((f.relpath, data.decode("utf-8")))
    return out


def check_round_trip(prefix: str, expected: list[tuple[str, str]], tokenizer) -> int:
    """Every document of ``prefix`` decodes to its source; returns how many hold "▁"."""
    dataset = open_indexed_dataset(prefix)  # megatron-core's IndexedDataset
    assert len(dataset) == len(expected)
    lost = []
    with_marker = 0
    for i, (name, text) in enumerate(expected):
        ids = dataset[i].tolist()
        assert ids[-1] == tokenizer.eod, name
        if tokenizer.detokenize(ids[:-1]) != text:
            lost.append(name)
        with_marker += SENTENCEPIECE_SPACE in text
    assert not lost, f"{len(lost)} documents do not decode to their source: {lost[:10]}"
    return with_marker


def preprocess(sp_model, prefix: Path, *inputs: str) -> None:
    result = run_tool(
        "tools/preprocess_data.py", *inputs, "--tokenizer-model", str(sp_model),
        "--output-prefix", str(prefix), "--workers", "2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_whole_stdlib_and_installed_files_with_the_marker_round_trip(
    tmp_path, sp_model, sp_tokenizer, hf_dir
):
    from megatron_dlm.data.hf_tokenizer import compare_with_sentencepiece

    found = [site_packages() / p for p in KNOWN_MARKER_FILES if (site_packages() / p).is_file()]
    assert found, f"none of {KNOWN_MARKER_FILES} is installed in {site_packages()}"
    corpus = copy_marker_files(found, tmp_path / "marker")
    # --stdlib: the train and valid parts of the standard library (no tests), then the files.
    preprocess(sp_model, tmp_path / "all", "--stdlib", "--input-dir", str(corpus))
    expected = documents(collect_corpus([corpus], stdlib=True))
    assert len(expected) > 500
    markers = check_round_trip(f"{tmp_path / 'all'}_text_document", expected, sp_tokenizer)
    assert markers == len(found)
    # The Hugging Face export encodes them with the same ids and decodes them back.
    marked = [text for _, text in expected if SENTENCEPIECE_SPACE in text]
    assert compare_with_sentencepiece(sp_model, hf_dir, marked) == []


@pytest.mark.slow
def test_every_installed_file_with_the_marker_round_trips(tmp_path, sp_model, sp_tokenizer, hf_dir):
    from megatron_dlm.data.hf_tokenizer import compare_with_sentencepiece

    found = sorted(
        p for p in site_packages().rglob("*.py") if p.is_file() and MARKER in p.read_bytes()
    )
    assert found, f"no file under {site_packages()} holds {SENTENCEPIECE_SPACE!r}"
    corpus = copy_marker_files(found, tmp_path / "marker")
    preprocess(sp_model, tmp_path / "m", "--input-dir", str(corpus))
    expected = documents(collect_corpus([corpus]))
    assert check_round_trip(f"{tmp_path / 'm'}_text_document", expected, sp_tokenizer) == len(found)
    assert compare_with_sentencepiece(sp_model, hf_dir, [t for _, t in expected]) == []
