"""Megatron-LM users' tokenizers: a GPT-NeoX-style and a Qwen-style local Hugging Face folder,
GPT-2 BPE vocab/merge files and a Llama-2 sentencepiece model (tests/data/tokenizer_kinds.py
builds tiny ones, no hub).

The default suite checks, per kind, that preprocessing and training get the same ids, that the
appended mask/padding tokens and the roles are recorded and reproduced, and that the exported
tokenizer gives the same ids through ``AutoTokenizer``; that a Megatron-LM-preprocessed dataset
(no ``.meta.json``) with GPT-2 ids trains; and that bad tokenizer flags are one clear error. The
whole pipeline through the command lines (preprocess -> train -> sample -> export -> evaluate)
is one parametrized slow test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.metadata import (
    DatasetMetadataError,
    check_tokenizer_matches,
    read_dataset_metadata,
)
from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_jsonl
from megatron_dlm.data.tokenizer import (
    TokenizerError,
    TokenizerOptions,
    load_recorded_tokenizer,
    load_tokenizer,
)
from tests.data import tokenizer_kinds as kinds

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "2",
    "--global-batch-size", "2", "--num-workers", "0", "--eval-iters", "1",
    "--use-cpu-initialization", "--log-interval", "1", "--lr", "2e-3",
]  # fmt: skip
# (end-of-document token, tokens the DLM appends) of each kind with default flags
EXPECTED = {
    "neox": ("<|endoftext|>", ("<|mask|>", "<|pad|>")),
    "qwen": ("<|endoftext|>", ("<|mask|>", "<|pad|>")),
    "gpt2": ("<|endoftext|>", ("<|mask|>", "<|pad|>")),
    "llama2": ("</s>", ("<|mask|>", "<|pad|>")),
}


@dataclasses.dataclass
class Setup:
    root: Path
    texts: list[str]
    jsonl: Path
    flags: dict[str, list[str]]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    """The three tokenizers and a jsonl corpus (shared by every test here)."""
    root = tmp_path_factory.mktemp("tokenizer_kinds")
    texts = kinds.corpus()
    jsonl = root / "docs.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts if t.strip()))
    flags = {kind: kinds.tokenizer_flags(kind, root, texts) for kind in kinds.KINDS}
    return Setup(root, [t for t in texts if t.strip()], jsonl, flags)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                HF_DATASETS_OFFLINE="1", PYTHONWARNINGS="ignore")  # fmt: skip


def run(*argv, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, argv)], cwd=REPO, env=_env(), capture_output=True,
        text=True, timeout=timeout, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("kind", kinds.KINDS)
def test_each_kind_keeps_its_ids_from_preprocessing_to_export(setup, kind, tmp_path):
    from transformers import AutoTokenizer

    from megatron_dlm.data.hf_tokenizer import write_recorded_tokenizer
    from megatron_dlm.data.indexed import open_indexed_dataset

    path, tokenizer_type, options = kinds.split_flags(setup.flags[kind])
    encoder = TextEncoder(path, tokenizer_type, options)
    tokenizer = load_tokenizer(path, tokenizer_type, options)
    eod, appended = EXPECTED[kind]
    assert tokenizer.pieces == encoder.pieces
    assert tokenizer.added_tokens == encoder.added_tokens == appended
    assert tokenizer.pieces[tokenizer.eod] == eod
    size = tokenizer.original_vocab_size
    assert (tokenizer.mask_id, tokenizer.pad, tokenizer.vocab_size) == (size, size + 1, size + 2)
    for text in setup.texts[:6]:
        assert tokenizer.tokenize(text) == encoder.encode(text)

    # preprocess: the sidecar records the appended tokens and the roles
    prefix = str(tmp_path / "data")
    preprocess_jsonl([str(setup.jsonl)], ["text"], PreprocessOptions(
        prefix, path, tokenizer_type, options, workers=1, progress_bar=False))  # fmt: skip
    dataset = f"{prefix}_text_document"
    record = read_dataset_metadata(dataset).tokenizer
    assert record.added_tokens == appended and record.original_vocab_size == size
    assert record.special_tokens == {"mask_token": "<|mask|>", "eos_token": eod,
                                     "pad_token": "<|pad|>"}  # fmt: skip
    indexed = open_indexed_dataset(dataset)  # kept alive: its arrays view the mmap
    first = [int(i) for i in indexed[0]]
    assert first == tokenizer.tokenize(setup.texts[0]) + [tokenizer.eod]
    check_tokenizer_matches(dataset, tokenizer)

    # another choice of roles gives other ids: refused
    other = load_tokenizer(path, tokenizer_type, dataclasses.replace(options, pad_token="1"))
    with pytest.raises(DatasetMetadataError, match="pad_id: dataset"):
        check_tokenizer_matches(dataset, other)

    # a later tool rebuilds the same tokenizer from the record alone
    again = load_recorded_tokenizer(record)
    assert again.pieces == tokenizer.pieces and again.special_ids == tokenizer.special_ids

    # the exported folder: AutoTokenizer gives the same ids and names the roles
    exported = write_recorded_tokenizer(record, tmp_path / "hf")
    auto = AutoTokenizer.from_pretrained(exported)
    assert len(auto) == tokenizer.vocab_size
    assert (auto.mask_token_id, auto.eos_token_id, auto.pad_token_id) == (
        tokenizer.mask_id, tokenizer.eod, tokenizer.pad)  # fmt: skip
    for text in setup.texts[:3]:
        assert auto.encode(text, add_special_tokens=False) == tokenizer.tokenize(text)


def test_special_tokens_by_text_or_id(setup):
    path, tokenizer_type, options = kinds.split_flags(setup.flags["neox"])
    size = TextEncoder(path, tokenizer_type, options).original_vocab_size
    # MegaDLMs' --mask-token 50277 on GPT-NeoX's 50277 tokens: the id after the vocabulary
    tok = TextEncoder(
        path,
        tokenizer_type,
        dataclasses.replace(options, mask_token=str(size), pad_token="<|padding|>"),
    )
    assert (tok.mask_id, tok.pad, tok.eod, tok.added_tokens) == (size, 1, 0, ("<|mask|>",))
    tok = TextEncoder(path, tokenizer_type, dataclasses.replace(options, mask_token="[MASK]"))
    assert tok.pieces[tok.mask_id] == "[MASK]" and tok.added_tokens == ("[MASK]", "<|pad|>")
    cases = [
        (dict(mask_token=str(size + 5)), rf"--mask-token {size + 5}: no such id"),
        (dict(eod_token="nope"), r"--eod-token 'nope' is not in the vocabulary"),
        (dict(pad_token="0"), r"must be three different tokens"),
        (dict(vocab_size=100), r"--vocab-size 100: the tokenizer .* has 702 ids"),
    ]
    for change, message in cases:
        for cls in (TextEncoder, load_tokenizer):
            with pytest.raises(TokenizerError, match=message):
                cls(path, tokenizer_type, dataclasses.replace(options, **change))


def _megatron_lm_dataset(prefix: str, documents: list[list[int]]) -> None:
    """A .bin/.idx pair as Megatron-LM's tools/preprocess_data.py writes it (megatron-core's
    IndexedDatasetBuilder, one document per item), with no .meta.json."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for ids in documents:
        builder.add_document(np.asarray(ids, dtype=np.uint16), [len(ids)])
    builder.finalize(prefix + ".idx")


@pytest.fixture(scope="module")
def megatron_lm_data(setup):
    """GPT-2 ids by OpenAI's algorithm, each document ending with <|endoftext|> (--append-eod)."""
    _, _, options = kinds.split_flags(setup.flags["gpt2"])
    reference = kinds.ReferenceGPT2(Path(options.vocab_file), Path(options.merge_file))
    eod = reference.encoder[kinds.ENDOFTEXT]
    root = setup.root / "megatron_lm"
    root.mkdir(exist_ok=True)
    documents = [reference.encode(t) + [eod] for t in setup.texts]
    _megatron_lm_dataset(str(root / "train_text_document"), documents[:-4])
    _megatron_lm_dataset(str(root / "valid_text_document"), documents[-4:])
    return root, documents


def test_megatron_lm_dataset_has_our_gpt2_ids_and_is_checked_without_a_sidecar(
    setup, megatron_lm_data, caplog
):
    from megatron_dlm.data.dataset_checks import DatasetError, validate_dataset_against_tokenizer

    root, documents = megatron_lm_data
    path, tokenizer_type, options = kinds.split_flags(setup.flags["gpt2"])
    tokenizer = load_tokenizer(path, tokenizer_type, options)
    for text, ids in zip(setup.texts, documents):  # Megatron-LM's GPT-2 ids are ours
        assert tokenizer.tokenize(text) + [tokenizer.eod] == ids
    prefix = str(root / "train_text_document")
    assert not os.path.exists(prefix + ".meta.json")
    with caplog.at_level(logging.WARNING):
        validate_dataset_against_tokenizer(prefix, tokenizer, flag="--train-data-path")
    assert "cannot be verified" in caplog.text
    bad = str(root / "bad_text_document")
    _megatron_lm_dataset(bad, [[1, 2, tokenizer.vocab_size + 7]])
    with pytest.raises(DatasetError, match=r"--train-data-path .*outside the tokenizer's vocab"):
        validate_dataset_against_tokenizer(bad, tokenizer, flag="--train-data-path")


def test_megatron_lm_dataset_trains_unchanged(setup, megatron_lm_data, tmp_path):
    root, _ = megatron_lm_data
    proc = run(
        "pretrain_dlm.py",
        *TINY,
        *setup.flags["gpt2"],
        "--train-iters",
        "2",
        "--train-data-path",
        root / "train_text_document",
        "--valid-data-path",
        root / "valid_text_document",
        "--save",
        tmp_path / "ckpt",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # fmt: skip
    assert "cannot be verified" in proc.stderr
    info = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert info["data"]["tokenizer_type"] == "GPT2BPETokenizer"


BAD_FLAGS = [
    pytest.param("gpt2", ["--merge-file", None], r"GPT2BPETokenizer needs --merge-file",
                 id="gpt2-without-merge-file"),
    pytest.param("neox", ["--mask-token", "99999"], r"--mask-token 99999: no such id",
                 id="mask-id-not-in-vocab", marks=pytest.mark.slow),
    pytest.param("qwen", ["--eod-token", "<|nope|>"], r"--eod-token '<\|nope\|>' is not in the",
                 id="eod-not-in-vocab", marks=pytest.mark.slow),
    pytest.param("neox", ["--tokenizer-type", "NullTokenizer"], r"NullTokenizer needs --vocab-size",
                 id="null-without-vocab-size", marks=pytest.mark.slow),
    pytest.param("neox", ["--vocab-size", "10"], r"--vocab-size 10: the tokenizer",
                 id="vocab-size-too-small", marks=pytest.mark.slow),
    pytest.param("llama2", ["--tokenizer-type", "SentencePieceTokenizer"],
                 r"lacks the special token\(s\) <\|mask\|>, <\|eod\|>.*--tokenizer-type "
                 r"Llama2Tokenizer", id="llama2-model-as-sentencepiece"),
]  # fmt: skip


@pytest.mark.parametrize("kind, change, message", BAD_FLAGS)
def test_bad_tokenizer_flags_are_one_clear_error(setup, megatron_lm_data, tmp_path, kind, change,
                                                 message):  # fmt: skip
    flags = list(setup.flags[kind])
    flag, value = change
    if flag in flags:
        i = flags.index(flag)
        del flags[i : i + 2]
    if value is not None:
        flags += [flag, value]
    root, _ = megatron_lm_data
    proc = run(
        "pretrain_dlm.py",
        *TINY,
        *flags,
        "--train-iters",
        "1",
        "--train-data-path",
        root / "train_text_document",
        "--valid-data-path",
        root / "valid_text_document",
        "--save",
        tmp_path / "ckpt",
    )
    assert proc.returncode == 2, proc.stderr[-3000:]  # fmt: skip
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and __import__("re").search(message, errors[0]), proc.stderr[-2000:]
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # five command lines, each importing torch and megatron-core
@pytest.mark.parametrize("kind", kinds.KINDS)
def test_preprocess_train_sample_export_evaluate(setup, kind, tmp_path):
    """The whole path through the command lines, as a Megatron-LM user runs it."""
    flags = setup.flags[kind]
    data = tmp_path / "data"
    proc = run("tools/preprocess_data.py", "--input", setup.jsonl, "--output-prefix", data,
               "--workers", "1", *flags)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "ckpt"
    proc = run("pretrain_dlm.py", *TINY, *flags, "--train-iters", "3", "--split", "8,2,0",
               "--data-path", f"{data}_text_document", "--save", ckpt)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = read_dataset_metadata(f"{data}_text_document").tokenizer
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def add(a, b):\\n\nimport json\n")
    out = tmp_path / "samples.jsonl"
    proc = run("tools/generate.py", "--load", ckpt, "--prompts-file", prompts, "--gen-length", 8,
               "--block-length", 8, "--steps", 8, "--output", out)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [json.loads(line)["prompt"] for line in out.read_text().splitlines()] == [
        "def add(a, b):\n", "import json"]  # fmt: skip
    hf = tmp_path / "hf"
    proc = run("tools/convert_to_hf.py", "--load", ckpt, "--output", hf)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((hf / "tokenizer_config.json").read_text())
    assert [config["mask_token"], config["eos_token"], config["pad_token"]] == [
        meta.special_tokens[k] for k in ("mask_token", "eos_token", "pad_token")]  # fmt: skip
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(hf)
    assert len(auto) == meta.vocab_size and auto.mask_token_id == meta.mask_id
    proc = run("tools/evaluate.py", "--model", "megatron_dlm", "--model_args",
               f"pretrained={hf},mc_num=2", "--tasks", "python_nextline_mc", "--limit", "2",
               "--output_path", tmp_path / "eval")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list((tmp_path / "eval").rglob("results*.json"))
    assert results and "python_nextline_mc" in json.loads(results[0].read_text())["results"]


def test_null_tokenizer_reads_ids_and_appends_the_dlm_tokens():
    from megatron_dlm.checkpoint import TokenizerRecord

    options = TokenizerOptions(vocab_size=50)
    for cls in (TextEncoder, load_tokenizer):
        tok = cls(None, "NullTokenizer", options)
        assert (tok.eod, tok.mask_id, tok.pad, tok.vocab_size) == (50, 51, 52, 53)
        encode = tok.encode if cls is TextEncoder else tok.tokenize
        assert encode("3 1\n4  1 50") == [3, 1, 4, 1, 50]
        with pytest.raises(TokenizerError, match="whitespace-separated token ids"):
            encode("3 one")
        with pytest.raises(TokenizerError, match=r"ids \[51\] are outside 0..50"):
            encode("51")
    record = TokenizerRecord.from_tokenizer(tok)
    assert record.original_vocab_size == 51 and record.model is None
    again = load_recorded_tokenizer(record)
    assert again.pieces == tok.pieces and again.special_ids == tok.special_ids


def test_a_smaller_tokenizer_for_a_record_names_the_mismatch_not_internal_flags(setup, tmp_path):
    """A tokenizer given for a checkpoint (--tokenizer-model) with fewer ids than the record's
    special ids: the error names the checkpoint's ids, not --mask-token flags nobody passed."""
    from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord

    path, tokenizer_type, options = kinds.split_flags(setup.flags["llama2"])
    record = TokenizerRecord.from_tokenizer(load_tokenizer(path, tokenizer_type, options))
    smaller = kinds.write_llama2(tmp_path / "small", setup.texts[:10], vocab_size=400)
    record = dataclasses.replace(record, type="SentencePieceTokenizer", added_tokens=())
    with pytest.raises(TokenizerError) as caught:
        load_recorded_tokenizer(record, smaller)
    from megatron_dlm.data.hf_tokenizer import write_recorded_tokenizer

    with pytest.raises(TokenizerError) as exported:  # the export's path (tools/convert_to_hf.py)
        write_recorded_tokenizer(record, tmp_path / "hf", smaller)
    for message in (str(caught.value), str(exported.value)):
        assert message.startswith(f"--tokenizer-model {smaller}: this tokenizer does not match")
        assert f"its mask id {record.mask_id}: no such id" in message
        assert "--mask-token" not in message
    assert not (tmp_path / "hf").exists()
