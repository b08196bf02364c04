"""Tokenizers for DLMs: megatron-core's text tokenizers plus the special ids a DLM needs.

megatron-core (``megatron.core.tokenizers``) loads the model file and tokenizes; this module adds
what a masked diffusion model needs on top: the ``<|mask|>`` id, and ``eod``/``pad`` resolved from
the special tokens we reserve (``<|eod|>``, ``<|pad|>``), never from literals or library defaults.

    from megatron_dlm.data.tokenizer import load_tokenizer
    tok = load_tokenizer("runs/tok/stdlib.model")                 # sentencepiece (default)
    tok = load_tokenizer("runs/tok/hf", "HuggingFaceTokenizer")   # tokenizer.json (+ config)
    ids = tok.tokenize("def f(x):\\n    return x\\n")
    tok.mask_id, tok.eod, tok.pad, tok.vocab_size

``DLMTokenizer`` satisfies :class:`megatron_dlm.models.vocab.TokenizerLike` and what megatron-core's
``GPTDatasetConfig`` needs (``vocab_size``, ``eod``, ``pad``, ``unique_identifiers``).

Importing this module is cheap; megatron-core (several seconds to import) is imported when a
tokenizer is loaded. Tools that only need ids use :mod:`megatron_dlm.data.encoder`, which gives
the same ids without megatron-core.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from megatron_dlm.config.data import DataConfig

logger = logging.getLogger(__name__)

MASK_TOKEN = "<|mask|>"
"""The token a masked diffusion model's forward process writes over input tokens."""
EOD_TOKEN = "<|eod|>"
"""End of document, appended to every document by tools/preprocess_data.py."""
PAD_TOKEN = "<|pad|>"
"""Padding (excluded from the loss)."""
UNK_TOKEN = "<unk>"
"""sentencepiece's unknown piece (id 0); byte fallback means it is never produced for text."""
SPECIAL_TOKENS = (MASK_TOKEN, EOD_TOKEN, PAD_TOKEN)
SENTENCEPIECE_SPACE = "\u2581"
"""sentencepiece's whitespace marker "▁": it writes each space as this character before
encoding and turns it back into a space when decoding, so a literal one in a document (spinner
frames "▁▃▅▇", box drawing) would come back as a space. :func:`encode_keeping_marker` encodes
it as its UTF-8 byte tokens instead, which decode to the character itself."""
SPACE_MARKER_BYTE_PIECES = tuple(f"<0x{b:02X}>" for b in SENTENCEPIECE_SPACE.encode("utf-8"))
"""The byte-fallback pieces of "▁" (``<0xE2> <0x96> <0x81>``)."""

TOKENIZER_LIBRARIES = {
    "SentencePieceTokenizer": "sentencepiece",
    "HuggingFaceTokenizer": "huggingface",
}
"""--tokenizer-type (Megatron-LM's names) -> megatron-core tokenizer library."""

HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"


class TokenizerError(ValueError):
    """A tokenizer that cannot be used: missing file, missing special tokens, wrong type."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the reserved special tokens in one vocabulary."""

    mask: int
    eod: int
    pad: int


@dataclass(frozen=True)
class TokenizerFiles:
    """Where a tokenizer lives on disk.

    Attributes:
        tokenizer_type: ``SentencePieceTokenizer`` or ``HuggingFaceTokenizer``.
        model_file: the file that defines the vocabulary (``.model`` or ``tokenizer.json``).
        load_path: what the library loads: the ``.model`` file, or the folder holding
            ``tokenizer.json`` (and optionally ``tokenizer_config.json``).
    """

    tokenizer_type: str
    model_file: Path
    load_path: Path

    @property
    def library(self) -> str:
        return TOKENIZER_LIBRARIES[self.tokenizer_type]


def resolve_tokenizer_files(path: str | os.PathLike, tokenizer_type: str) -> TokenizerFiles:
    """Check that ``path`` holds a tokenizer of ``tokenizer_type`` and say where its files are.

    A Hugging Face tokenizer may be given as its ``tokenizer.json`` or the folder holding it.

    Raises:
        TokenizerError: unknown type, missing file, or a folder without ``tokenizer.json``.
    """
    if tokenizer_type not in TOKENIZER_LIBRARIES:
        raise TokenizerError(
            f"--tokenizer-type {tokenizer_type!r} is not supported; choose one of "
            f"{', '.join(TOKENIZER_LIBRARIES)}"
        )
    if not path:
        raise TokenizerError(
            "--tokenizer-model is required (a sentencepiece .model file or a "
            "Hugging Face tokenizer.json); train one with tools/train_tokenizer.py"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise TokenizerError(f"tokenizer model {str(p)!r} (--tokenizer-model) does not exist")
    if tokenizer_type == "SentencePieceTokenizer":
        if not p.is_file():
            raise TokenizerError(
                f"--tokenizer-model {str(p)!r} is a folder; SentencePieceTokenizer needs the "
                f".model file (for a tokenizer.json use --tokenizer-type HuggingFaceTokenizer)"
            )
        return TokenizerFiles(tokenizer_type, p.resolve(), p.resolve())
    model_file = p / HF_TOKENIZER_FILE if p.is_dir() else p
    if not model_file.is_file():
        raise TokenizerError(
            f"{str(p)!r} (--tokenizer-model) has no {HF_TOKENIZER_FILE}; HuggingFaceTokenizer "
            f"needs a tokenizers JSON (tools/train_tokenizer.py --hf-output writes one)"
        )
    if model_file.suffix != ".json":
        raise TokenizerError(
            f"--tokenizer-model {str(p)!r} is not a tokenizer.json; for a sentencepiece model "
            f"use --tokenizer-type SentencePieceTokenizer"
        )
    return TokenizerFiles(tokenizer_type, model_file.resolve(), model_file.resolve().parent)


def hf_split_special_tokens(files: TokenizerFiles) -> bool:
    """Whether the HF tokenizer encodes special-token text as plain text.

    Read from ``tokenizer_config.json`` (``split_special_tokens``, transformers' default False)
    so that :mod:`megatron_dlm.data.encoder` does exactly what ``AutoTokenizer`` does.
    """
    config = files.load_path / HF_CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return bool(json.loads(config.read_text(encoding="utf-8")).get("split_special_tokens"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot read {config}: {exc}") from exc


HF_SPECIAL_ROLES = {MASK_TOKEN: "mask_token", EOD_TOKEN: "eos_token", PAD_TOKEN: "pad_token"}
"""The ``tokenizer_config.json`` key that names the token of each role."""


def hf_special_tokens(files: TokenizerFiles) -> dict[str, str]:
    """The special tokens ``tokenizer_config.json`` names, by reserved token
    (``{"<|eod|>": "</s>", ...}``): its ``mask_token``, ``eos_token`` and ``pad_token``.

    An imported Hugging Face model's tokenizer (tools/convert_hf_to_megatron.py) keeps its own
    end-of-sequence token and names the three roles there.
    """
    config = files.load_path / HF_CONFIG_FILE
    if files.library != "huggingface" or not config.is_file():
        return {}
    try:
        values = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot read {config}: {exc}") from exc
    named = {}
    for reserved, key in HF_SPECIAL_ROLES.items():
        value = values.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        if isinstance(value, str) and value:
            named[reserved] = value
    return named


def resolve_special_ids(
    lookup: Callable[[str], int | None],
    vocab_size: int,
    source: str | os.PathLike,
    named: dict[str, str] | None = None,
) -> SpecialTokenIds:
    """Ids of ``<|mask|>``, ``<|eod|>`` and ``<|pad|>`` (or the tokens ``named`` gives those
    roles), checked.

    Args:
        lookup: token -> id, or None where the vocabulary lacks the token.
        vocab_size: size of the vocabulary (ids must lie below it).
        source: the tokenizer file, named in errors.
        named: reserved token -> the token that plays its role in this vocabulary
            (:func:`hf_special_tokens`); roles it does not name use the reserved tokens.

    Raises:
        TokenizerError: a token is missing, out of range, or two of them share an id; the
            message names the file and says how to fix it.
    """
    named = named or {}
    ids = {named.get(token, token): lookup(named.get(token, token)) for token in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None or not 0 <= i < vocab_size]
    if missing:
        raise TokenizerError(
            f"tokenizer {str(source)!r} lacks the special token(s) {', '.join(missing)}. "
            f"A DLM needs {', '.join(SPECIAL_TOKENS)} in the vocabulary. Train a tokenizer with "
            f"tools/train_tokenizer.py (it reserves them), or add them to yours: sentencepiece "
            f"`control_symbols=[...]` at training time; Hugging Face "
            f"`tokenizer.add_special_tokens(...)`, then save it again."
        )
    if len(set(ids.values())) != len(SPECIAL_TOKENS):
        raise TokenizerError(f"tokenizer {str(source)!r}: special tokens share ids: {ids}")
    mask, eod, pad = ids.values()
    return SpecialTokenIds(mask=mask, eod=eod, pad=pad)


def vocab_sha256(pieces: Sequence[str | None]) -> str:
    """Fingerprint of a vocabulary: sha256 of its pieces in id order (JSON, UTF-8).

    Equal for a sentencepiece model and its Hugging Face export, different for any other
    vocabulary; recorded in dataset metadata (:mod:`megatron_dlm.data.metadata`). A space
    inside a piece counts as "▁": the export spells sentencepiece's whitespace marker as the
    space it stands for (:mod:`megatron_dlm.data.hf_tokenizer`), and fingerprints recorded
    before it did stay valid.
    """
    canonical = [p.replace(" ", SENTENCEPIECE_SPACE) if p else p for p in pieces]
    payload = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def marker_byte_ids(token_to_id: Callable[[str], int | None]) -> list[int] | None:
    """Ids of the byte pieces of "▁" in a sentencepiece vocabulary, or None if it has no byte
    fallback (then a literal "▁" cannot be kept and decodes as a space)."""
    ids = [token_to_id(piece) for piece in SPACE_MARKER_BYTE_PIECES]
    return None if None in ids else ids  # type: ignore[return-value]


def encode_keeping_marker(
    encode: Callable[[str], list[int]], text: str, marker_ids: Sequence[int] | None
) -> list[int]:
    """Encode ``text`` with sentencepiece's ``encode`` so that it decodes back exactly.

    Each literal "▁" becomes its byte tokens (``marker_ids``) and the text between them is
    encoded as usual: a sentencepiece model cannot tell a literal "▁" from a space, and byte
    tokens never merge with their neighbours, so the ids are those of the text everywhere
    else. The same ids as the Hugging Face export, whose vocabulary spells the marker as a
    space and so encodes a literal "▁" as bytes itself.

    Args:
        encode: the library's text -> ids.
        text: the document.
        marker_ids: from :func:`marker_byte_ids`; None encodes as the library does.
    """
    if marker_ids is None or SENTENCEPIECE_SPACE not in text:
        return list(encode(text))
    ids: list[int] = []
    for k, part in enumerate(text.split(SENTENCEPIECE_SPACE)):
        if k:
            ids.extend(marker_ids)
        if part:
            ids.extend(encode(part))
    return ids


def hf_spaces_as_marker(tokenizer_file: str | os.PathLike) -> bool:
    """Whether a tokenizers JSON turns spaces into "▁" in its normaliser, as this project's
    exports did before they spelled the marker as a space: such a file decodes a literal "▁"
    in text as a space (re-export it with tools/train_tokenizer.py --hf-output or
    tools/convert_to_hf.py)."""
    try:
        normalizer = json.loads(Path(tokenizer_file).read_text(encoding="utf-8")).get("normalizer")
    except (OSError, ValueError):
        return False
    stack = [normalizer]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        stack.extend(node.get("normalizers") or [])
        pattern = node.get("pattern") or {}
        if (
            node.get("type") == "Replace"
            and pattern.get("String") == " "
            and node.get("content") == SENTENCEPIECE_SPACE
        ):
            return True
    return False


def warn_if_spaces_as_marker(files: TokenizerFiles) -> None:
    """Log a warning for a tokenizers JSON that loses literal "▁" (:func:`hf_spaces_as_marker`)."""
    if files.library == "huggingface" and hf_spaces_as_marker(files.model_file):
        logger.warning(
            "%s maps spaces to %r, so a literal %r in a document decodes as a space; "
            "re-export it (tools/train_tokenizer.py --hf-output, tools/convert_to_hf.py)",
            files.model_file,
            SENTENCEPIECE_SPACE,
            SENTENCEPIECE_SPACE,
        )


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class DLMTokenizer:
    """A megatron-core text tokenizer with the special ids a DLM needs.

    Build with :func:`load_tokenizer` or :func:`build_tokenizer`. Tokenizing and detokenizing go
    through megatron-core's tokenizer (``megatron_tokenizer``); the special ids come from the
    reserved tokens. Literal special-token text in the input is tokenized as text (a source
    file containing ``<|mask|>`` never produces the mask id).

    Args:
        path: sentencepiece ``.model``, or a Hugging Face ``tokenizer.json`` or its folder.
        tokenizer_type: ``SentencePieceTokenizer`` (default) or ``HuggingFaceTokenizer``.
    """

    def __init__(self, path: str | os.PathLike, tokenizer_type: str = "SentencePieceTokenizer"):
        self.files = resolve_tokenizer_files(path, tokenizer_type)
        from megatron.core.tokenizers import MegatronTokenizer

        kwargs: dict[str, Any] = {}
        if self.files.library == "huggingface":
            kwargs["use_fast"] = True
        try:
            self.megatron_tokenizer = MegatronTokenizer.from_pretrained(
                str(self.files.load_path),
                metadata_path={"library": self.files.library},
                **kwargs,
            )
        except Exception as exc:
            raise TokenizerError(
                f"cannot load {self.files.tokenizer_type} from {str(self.files.model_file)!r}: "
                f"{exc}"
            ) from exc
        if self.files.library == "huggingface" and not hf_split_special_tokens(self.files):
            logger.warning(
                "%s: split_special_tokens is not set, so special-token text in documents is "
                "encoded as the special id; tools/train_tokenizer.py --hf-output sets it",
                self.files.load_path / HF_CONFIG_FILE,
            )
        warn_if_spaces_as_marker(self.files)
        self._pieces: list[str] = list(self.megatron_tokenizer.vocab)
        self._index = {piece: i for i, piece in enumerate(self._pieces)}
        self.special_ids = resolve_special_ids(
            self._index.get, self.vocab_size, self.files.model_file, hf_special_tokens(self.files)
        )
        self._marker_ids = (
            marker_byte_ids(self._index.get) if self.files.library == "sentencepiece" else None
        )

    @property
    def vocab_size(self) -> int:
        """Number of token ids (before padding for tensor parallelism)."""
        return int(self.megatron_tokenizer.vocab_size)

    @property
    def mask_id(self) -> int:
        """Id of ``<|mask|>``."""
        return self.special_ids.mask

    @property
    def eod(self) -> int:
        """Id of ``<|eod|>`` (end of document)."""
        return self.special_ids.eod

    @property
    def eos(self) -> int:
        """Alias of :attr:`eod` (megatron-core checks both for pad collisions)."""
        return self.special_ids.eod

    @property
    def pad(self) -> int:
        """Id of ``<|pad|>``."""
        return self.special_ids.pad

    @property
    def special_tokens_dict(self) -> dict[str, int]:
        """Special ids by role (megatron-core checks that ``pad`` collides with none)."""
        return {"mask_token": self.mask_id, "eod_token": self.eod, "pad_token": self.pad}

    @property
    def model_path(self) -> Path:
        """The file that defines the vocabulary."""
        return self.files.model_file

    @property
    def tokenizer_type(self) -> str:
        return self.files.tokenizer_type

    @property
    def pieces(self) -> list[str]:
        """The vocabulary: piece of each id."""
        return list(self._pieces)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary piece, or None if the vocabulary lacks it."""
        return self._index.get(token)

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the model file (provenance)."""
        return file_sha256(self.files.model_file)

    @cached_property
    def vocab_sha256(self) -> str:
        """Fingerprint of the vocabulary (see :func:`vocab_sha256`)."""
        return vocab_sha256(self._pieces)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added); they decode back to ``text``
        (a literal "▁" as byte tokens, see :func:`encode_keeping_marker`)."""
        return encode_keeping_marker(self.megatron_tokenizer.tokenize, text, self._marker_ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens decode to nothing."""
        return self.megatron_tokenizer.detokenize(list(ids))

    @property
    def unique_identifiers(self) -> OrderedDict:
        """What identifies this tokenizer in megatron-core's dataset cache keys.

        Content, not location: the same vocabulary at another path gives the same key.
        """
        return OrderedDict(
            [
                ("class", f"{type(self).__module__}.{type(self).__qualname__}"),
                ("library", self.files.library),
                ("vocab_size", self.vocab_size),
                ("vocab_sha256", self.vocab_sha256),
                ("special_ids", [self.mask_id, self.eod, self.pad]),
            ]
        )

    def __repr__(self) -> str:
        return (
            f"DLMTokenizer({str(self.model_path)!r}, {self.tokenizer_type}, "
            f"vocab_size={self.vocab_size}, mask={self.mask_id}, eod={self.eod}, pad={self.pad})"
        )


def load_tokenizer(
    path: str | os.PathLike, tokenizer_type: str = "SentencePieceTokenizer"
) -> DLMTokenizer:
    """Load a tokenizer and resolve its special ids (see :class:`DLMTokenizer`)."""
    return DLMTokenizer(path, tokenizer_type)


def build_tokenizer(data_cfg: DataConfig) -> DLMTokenizer:
    """The tokenizer of a run: ``--tokenizer-type`` and ``--tokenizer-model``."""
    return load_tokenizer(data_cfg.tokenizer_model, data_cfg.tokenizer_type)
