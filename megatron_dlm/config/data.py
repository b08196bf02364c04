"""Data: tokenizer, indexed datasets, splits and the unique-token budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_dlm.config.base import require


@dataclass
class DataConfig:
    """Tokenizer and training/validation data (Megatron-LM flag names where Megatron has one)."""

    tokenizer_type: Literal["SentencePieceTokenizer", "HuggingFaceTokenizer"] = (
        "SentencePieceTokenizer"
    )
    """Tokenizer library: a sentencepiece ``.model`` or a Hugging Face ``tokenizer.json``."""
    tokenizer_model: str | None = None
    """Path of the tokenizer model file (sentencepiece ``.model`` or ``tokenizer.json``)."""
    data_path: list[str] | None = None
    """Dataset prefixes (``{prefix}.bin/.idx``), optionally weighted: ``0.7 a 0.3 b`` (weights set
    each prefix's share of the samples and of --unique-tokens); split into train/valid/test by
    --split."""
    split: str = "969,30,1"
    """Relative sizes of the train, valid and test splits of --data-path, by document."""
    train_data_path: list[str] | None = None
    """Separate (optionally weighted) training dataset prefixes, instead of --data-path."""
    valid_data_path: list[str] | None = None
    """Separate validation dataset prefixes."""
    test_data_path: list[str] | None = None
    """Separate test dataset prefixes."""
    data_cache_path: str | None = None
    """Where to cache the sample indices (default: next to the data)."""
    unique_tokens: int | None = None
    """Cap the training data to exactly this many unique tokens, drawn as whole documents of the
    training split (see --unique-tokens-sample, --unique-tokens-boundary; a weighted blend
    splits the cap by weight); the compute budget (--train-iters or --train-tokens) then replays
    that set for as many epochs as it needs (see --epoch-windows)."""
    unique_tokens_sample: Literal["random", "first"] = "random"
    """Which documents --unique-tokens keeps: a random sample of the training split, seeded by
    --seed (random), or its first documents in file order (first)."""
    unique_tokens_boundary: Literal["cut", "whole"] = "cut"
    """The last document --unique-tokens keeps: cut after the tokens that make the count exact
    (cut), or kept whole, so that the set holds up to one document more (whole)."""
    epoch_windows: Literal["recut", "fixed"] = "recut"
    """Training windows per epoch: each epoch shuffles the documents anew and cuts new
    windows, as Megatron-LM's multi-epoch GPTDataset does (recut), or every epoch replays the
    windows of one cut in a new order (fixed)."""
    num_workers: int = 2
    """Data-loader worker processes per rank."""
    mmap_bin_files: bool = True
    """Memory-map the ``.bin`` files (--no-mmap-bin-files reads them into memory)."""
    mock_data: bool = False
    """Megatron-LM's synthetic data. Not implemented: accepted so that --dry-run (which reads no
    data) sizes a Megatron-LM script; training refuses it (give --data-path)."""
    eod_mask_loss: bool = False
    """Exclude end-of-document tokens from the loss."""

    def __post_init__(self):
        require(self.num_workers >= 0, "--num-workers must be >= 0")
        require(self.unique_tokens is None or self.unique_tokens > 0, "--unique-tokens must be > 0")
        require(
            not (self.data_path and (self.train_data_path or self.valid_data_path)),
            "--data-path and --train-data-path/--valid-data-path are mutually exclusive",
        )
        # Megatron-LM reads the numbers out of the string: quotes a launch script passes
        # literally ("--split '99,1,0'") and spaces do not matter.
        self.split = self.split.strip().strip("'\"").replace(" ", "")
        parts = self.split.replace("/", ",").split(",")
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            weights = []
        require(
            1 <= len(weights) <= 3 and all(w >= 0 for w in weights) and sum(weights) > 0,
            f"--split must be up to three non-negative weights like 969,30,1, got {self.split!r}",
        )
