"""Data: tokenizer, indexed datasets, splits and the unique-token budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megatron_dlm.config.base import require


@dataclass
class DataConfig:
    """Tokenizer and training/validation data (Megatron-LM flag names where Megatron has one)."""

    tokenizer_type: Literal[
        "SentencePieceTokenizer",
        "Llama2Tokenizer",
        "HuggingFaceTokenizer",
        "GPT2BPETokenizer",
        "NullTokenizer",
    ] = "SentencePieceTokenizer"
    """Tokenizer: a sentencepiece ``.model`` (SentencePieceTokenizer; Llama2Tokenizer for a
    Llama-2/Mistral ``tokenizer.model``: end of document ``</s>``, mask and padding appended), a
    local Hugging Face tokenizer folder or ``tokenizer.json`` (HuggingFaceTokenizer), GPT-2 BPE
    files (GPT2BPETokenizer: --vocab-file, --merge-file), or token ids as text (NullTokenizer:
    --vocab-size)."""
    tokenizer_model: str | None = None
    """Path of the tokenizer: a sentencepiece ``.model``, or a Hugging Face tokenizer folder
    (``tokenizer.json`` + ``tokenizer_config.json``) or its ``tokenizer.json``."""
    vocab_file: str | None = None
    """GPT-2's ``vocab.json`` (--tokenizer-type GPT2BPETokenizer)."""
    merge_file: str | None = None
    """GPT-2's ``merges.txt`` (--tokenizer-type GPT2BPETokenizer)."""
    vocab_size: int | None = None
    """NullTokenizer: token ids 0..N-1 (end of document N). With another tokenizer, the most ids
    it may have, appended special tokens included: the model is sized from the tokenizer, padded
    to --make-vocab-size-divisible-by, as in Megatron-LM."""
    mask_token: str | None = None
    """The mask token, as its text or its id (``--mask-token 50277``); default: the tokenizer's
    ``mask_token``, else ``<|mask|>``. A token (or the id equal to the vocabulary size) the
    vocabulary lacks is appended, and the embedding grows by its row."""
    eod_token: str | None = None
    """The end-of-document token (text or id) that ends every document; default: the
    tokenizer's ``eos_token``, else ``<|eod|>`` or ``<|endoftext|>``. Never appended."""
    pad_token: str | None = None
    """The padding token (text or id); default: the tokenizer's ``pad_token`` when it differs
    from the end of document, else ``<|pad|>`` (appended when missing)."""
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
    """Megatron-LM's synthetic data: random ids of the tokenizer, written once as an indexed
    dataset (under --data-cache-path, else the run directory's ``mock_data/``) and trained on as
    --data-path (megatron_dlm/data/mock.py); for smoke and throughput runs."""
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
        require(
            self.vocab_size is None or self.vocab_size >= 1,
            f"--vocab-size must be >= 1, got {self.vocab_size}",
        )
        if self.tokenizer_type == "GPT2BPETokenizer":
            missing = [f for f, v in (("--vocab-file", self.vocab_file),
                                      ("--merge-file", self.merge_file)) if not v]  # fmt: skip
            require(
                not missing,
                f"--tokenizer-type GPT2BPETokenizer needs {' and '.join(missing)} (GPT-2's "
                f"vocab.json and merges.txt)",
            )
        require(
            self.tokenizer_type != "NullTokenizer" or self.vocab_size is not None,
            "--tokenizer-type NullTokenizer needs --vocab-size N",
        )
        for flag_name, value in (("--mask-token", self.mask_token),
                                 ("--eod-token", self.eod_token),
                                 ("--pad-token", self.pad_token)):  # fmt: skip
            require(value is None or str(value).strip() != "", f"{flag_name} must not be empty")
        parts = self.split.replace("/", ",").split(",")
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            weights = []
        require(
            1 <= len(weights) <= 3 and all(w >= 0 for w in weights) and sum(weights) > 0,
            f"--split must be up to three non-negative weights like 969,30,1, got {self.split!r}",
        )
