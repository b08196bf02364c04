"""Tiny local tokenizers shaped like the ones Megatron-LM users bring (no hub): a GPT-NeoX-style
and a Qwen-style Hugging Face folder, GPT-2 BPE vocab/merge files, and a Llama-2-style
sentencepiece ``tokenizer.model`` (Megatron-LM's ``Llama2Tokenizer``).

Each is a byte-level BPE trained with ``tokenizers`` on a bit of the standard library, laid out
as its family is: GPT-NeoX puts ``<|endoftext|>`` and ``<|padding|>`` at ids 0 and 1 and names
``<|endoftext|>`` as bos/eos/unk (no mask, no pad); Qwen2 appends ``<|endoftext|>``,
``<|im_start|>``, ``<|im_end|>`` after the BPE vocabulary and names ``<|endoftext|>`` as both eos
and pad; GPT-2's ``vocab.json`` ends with ``<|endoftext|>`` (id 50256 in the real one). The
Llama-2 model is trained with sentencepiece as Meta's was (BPE, byte fallback, split digits, a
dummy prefix, identity normalisation; ``<unk>``, ``<s>``, ``</s>`` at 0, 1, 2; no pad, no mask).
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron_dlm.data.corpus import find_source_files, stdlib_dir

ENDOFTEXT = "<|endoftext|>"
KINDS = ("neox", "qwen", "gpt2", "llama2")


def corpus(limit: int = 40) -> list[str]:
    files = find_source_files(stdlib_dir() / "json") + find_source_files(stdlib_dir() / "email")
    return [f.path.read_text(encoding="utf-8") for f in files[:limit]]


QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
"""Qwen2's pre-tokenisation (its tokenizer.json, and transformers' Qwen2Tokenizer)."""


def _byte_level_bpe(texts: list[str], vocab_size: int, special: list[str], qwen: bool = False):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if qwen:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok


def write_neox(root: Path, texts: list[str]) -> Path:
    """A GPT-NeoX-style folder: tokenizer.json + tokenizer_config.json (GPTNeoXTokenizer)."""
    root.mkdir(parents=True, exist_ok=True)
    tok = _byte_level_bpe(texts, 700, [ENDOFTEXT, "<|padding|>"])
    tok.save(str(root / "tokenizer.json"))
    config = {
        "tokenizer_class": "GPTNeoXTokenizer",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "unk_token": ENDOFTEXT,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return root


def write_qwen(root: Path, texts: list[str]) -> Path:
    """A Qwen2-style folder: special tokens after the BPE vocabulary, pad = eos."""
    from tokenizers import AddedToken

    root.mkdir(parents=True, exist_ok=True)
    tok = _byte_level_bpe(texts, 650, [], qwen=True)
    specials = [ENDOFTEXT, "<|im_start|>", "<|im_end|>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.save(str(root / "tokenizer.json"))
    decoder = {
        str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False,
                                  "rstrip": False, "single_word": False, "special": True}
        for t in specials
    }  # fmt: skip
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": decoder,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": ENDOFTEXT,
        "pad_token": ENDOFTEXT,
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "model_max_length": 32768,
    }
    (root / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return root


def write_gpt2(root: Path, texts: list[str]) -> tuple[Path, Path]:
    """GPT-2 BPE files: vocab.json (``<|endoftext|>`` last) and merges.txt."""
    root.mkdir(parents=True, exist_ok=True)
    tok = _byte_level_bpe(texts, 600, [])
    tok.model.save(str(root))
    vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))
    vocab[ENDOFTEXT] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return root / "vocab.json", root / "merges.txt"


def write_llama2(root: Path, texts: list[str], vocab_size: int = 600) -> Path:
    """A Llama-2-style sentencepiece ``tokenizer.model``."""
    import sentencepiece

    root.mkdir(parents=True, exist_ok=True)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(root / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, unk_id=0, bos_id=1, eos_id=2,
        pad_id=-1, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True,
        character_coverage=0.99995, minloglevel=2, num_threads=1,
    )  # fmt: skip
    return root / "tokenizer.model"


def tokenizer_flags(kind: str, root: Path, texts: list[str]) -> list[str]:
    """Write the tokenizer of ``kind`` under ``root``; the flags that select it."""
    if kind == "neox":
        return ["--tokenizer-type", "HuggingFaceTokenizer",
                "--tokenizer-model", str(write_neox(root / "neox", texts))]  # fmt: skip
    if kind == "qwen":
        return ["--tokenizer-type", "HuggingFaceTokenizer",
                "--tokenizer-model", str(write_qwen(root / "qwen", texts))]  # fmt: skip
    if kind == "llama2":
        return ["--tokenizer-type", "Llama2Tokenizer",
                "--tokenizer-model", str(write_llama2(root / "llama2", texts))]  # fmt: skip
    vocab, merges = write_gpt2(root / "gpt2", texts)
    return ["--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(vocab),
            "--merge-file", str(merges)]  # fmt: skip


def split_flags(flags: list[str]):
    """(--tokenizer-model, --tokenizer-type, TokenizerOptions) of tokenizer flags."""
    from megatron_dlm.data.tokenizer import TokenizerOptions

    values = dict(zip(flags[::2], flags[1::2]))
    options = TokenizerOptions(
        vocab_file=values.get("--vocab-file"),
        merge_file=values.get("--merge-file"),
        mask_token=values.get("--mask-token"),
        eod_token=values.get("--eod-token"),
        pad_token=values.get("--pad-token"),
    )
    return values.get("--tokenizer-model"), values["--tokenizer-type"], options


# --- an independent GPT-2 BPE: OpenAI's algorithm (what Megatron-LM's gpt2_tokenization runs) --


def _bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


class ReferenceGPT2:
    """GPT-2's encoder as OpenAI published it: regex split, bytes as unicode, greedy merges by
    rank. The oracle for the ids a Megatron-LM-preprocessed dataset holds."""

    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, vocab_file: Path, merge_file: Path):
        import regex

        self.encoder = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        lines = Path(merge_file).read_text(encoding="utf-8").split("\n")[1:]
        merges = [tuple(line.split()) for line in lines if line.strip()]
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()
        self.pattern = regex.compile(self.PATTERN)

    def _bpe(self, token: str) -> tuple[str, ...]:
        word = tuple(token)
        while len(word) > 1:
            best = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self.pattern.findall(text):
            token = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token))
        return ids
