"""A pretrained AR model from Hugging Face becomes a DLM: import, tokenize with the imported
tokenizer, then ``pretrain_dlm.py --finetune --load CKPT --objective dlm`` (or ``ar``).

The "pretrained" model is a tiny Llama trained for a few steps with transformers itself, with a
byte-level BPE tokenizer that has an end-of-sequence token and no mask or padding token: the
import adds both (the embedding grows), and the 302-token vocabulary pads to 384 rows at TP=1
but 512 at TP=2, so training at TP=2 must build the checkpoint's row count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from megatron_dlm.data.corpus import SourceFile
from megatron_dlm.testing import run_distributed
from tests.conftest import TRAIN_PACKAGES, VALID_PACKAGES, _files
from tests.hf.conftest import cli
from tests.hf.stock_models import WORDS
from tests.training.workers import pretrain_worker

SEQ = 64


def _texts(packages) -> list[str]:
    return [f.path.read_text(encoding="utf-8") for f in _files(packages)]


def _pretrained_llama(directory: Path, texts: list[str]) -> float:
    """A BPE tokenizer and a Llama trained on ``texts`` for 40 steps; its last loss."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tokenizer.train_from_iterator(texts, trainer)
    directory.mkdir(parents=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    ids = [i for text in texts for i in tokenizer.encode(text).ids + [0]]
    windows = torch.tensor(ids[: len(ids) // SEQ * SEQ]).view(-1, SEQ)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=tokenizer.get_vocab_size(), hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=SEQ, eos_token_id=0, tie_word_embeddings=False,
        )
    )  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = windows[torch.randint(len(windows), (8,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(directory)
    return loss.item()


def _data(prefix: Path, tokenizer: Path, files: list[SourceFile]) -> str:
    from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_files

    options = PreprocessOptions(
        str(prefix), str(tokenizer), "HuggingFaceTokenizer", progress_bar=False
    )
    preprocess_files(files, options)
    return f"{prefix}_text_document"


def _word_documents(directory: Path, count: int, seed: int) -> list[SourceFile]:
    """Documents of the stock models' words: a fixed cycle from a random start (learnable)."""
    gen = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True)
    files = []
    for i in range(count):
        start = int(torch.randint(WORDS, (1,), generator=gen))
        words = [f"w{(start + 7 * j) % WORDS}" for j in range(200)]
        (directory / f"{i}.txt").write_text(" ".join(words))
        files.append(SourceFile(directory, f"{i}.txt"))
    return files


def test_an_imported_model_adapts_into_a_dlm_at_tp2(imported, tmp_path):
    """`--finetune --load CKPT --objective dlm` trains the imported Qwen3 at TP=2 (the import
    saved 128 embedding rows; TP=2 would pad its 94 tokens to 256)."""
    ckpt = imported["qwen3"].checkpoint
    tokenizer = ckpt / "tokenizer"
    train = _data(tmp_path / "train", tokenizer, _word_documents(tmp_path / "tr", 40, 0))
    valid = _data(tmp_path / "valid", tokenizer, _word_documents(tmp_path / "va", 4, 1))
    run = tmp_path / "dlm"
    argv = [
        "--config", str(ckpt / "model.yaml"), "--load", str(ckpt), "--finetune",
        "--objective", "dlm", "--save", str(run), "--tensor-model-parallel-size", "2",
        "--train-data-path", train, "--valid-data-path", valid, "--num-workers", "0",
        "--seq-length", "32", "--micro-batch-size", "8", "--train-iters", "12",
        "--lr", "3e-3", "--lr-warmup-iters", "1", "--min-lr", "3e-4", "--log-interval", "1",
        "--eval-iters", "1", "--eval-interval", "12",
    ]  # fmt: skip
    records = run_distributed(pretrain_worker, 2, args=(argv, str(run)))[0]
    losses = _losses(records)
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    config = json.loads((run / "config.json").read_text())
    assert config["objective"]["objective"] == "dlm" and config["model"]["qk_layernorm"]
    assert config["model"]["make_vocab_size_divisible_by"] == 64  # 128 rows over 2 ranks


def _losses(records) -> list[float]:
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.slow
def test_a_pretrained_llama_adapts_into_a_dlm_and_continues_as_ar(tmp_path):
    hf_loss = _pretrained_llama(tmp_path / "llama", _texts(TRAIN_PACKAGES))
    ckpt = tmp_path / "ckpt"
    status, text = cli("convert_hf_to_megatron.py", "--hf", tmp_path / "llama", "--save", ckpt,
                       "--verify")  # fmt: skip
    assert status == 0 and "OK" in text, text
    assert "tokens added: <|mask|>, <|pad|>" in text
    tokenizer = ckpt / "tokenizer"
    train = _data(tmp_path / "train", tokenizer, _files(TRAIN_PACKAGES))
    valid = _data(tmp_path / "valid", tokenizer, _files(VALID_PACKAGES))
    common = [
        "--config", str(ckpt / "model.yaml"), "--load", str(ckpt), "--finetune",
        "--train-data-path", train, "--valid-data-path", valid, "--num-workers", "0",
        "--micro-batch-size", "8", "--log-interval", "1", "--eval-iters", "2",
        "--lr-warmup-iters", "2",
    ]  # fmt: skip

    # Continued AR pretraining starts where transformers left off (a fresh model: ln 302).
    run = tmp_path / "ar"
    argv = [*common, "--objective", "ar", "--save", str(run), "--train-iters", "2",
            "--lr", "1e-6", "--min-lr", "1e-7", "--lr-warmup-iters", "0"]  # fmt: skip
    (records,) = run_distributed(pretrain_worker, 1, args=(argv, str(run)))
    first = _losses(records)[0]
    assert first < math.log(302) - 1.0 and abs(first - hf_loss) < 0.5, (first, hf_loss)

    # AR -> DLM at TP=2: the masked-diffusion loss falls.
    run = tmp_path / "dlm"
    argv = [*common, "--objective", "dlm", "--save", str(run), "--train-iters", "25",
            "--lr", "2e-3", "--min-lr", "2e-4", "--eval-interval", "25",
            "--tensor-model-parallel-size", "2"]  # fmt: skip
    records = run_distributed(pretrain_worker, 2, args=(argv, str(run)))[0]
    losses = _losses(records)
    assert len(losses) == 25
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    config = json.loads((run / "config.json").read_text())
    assert config["objective"]["objective"] == "dlm"
    assert config["model"]["make_vocab_size_divisible_by"] == 192  # 384 rows over 2 ranks
