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
from typing import TYPE_CHECKING, Any, Protocol

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
    "Llama2Tokenizer": "sentencepiece",
    "HuggingFaceTokenizer": "huggingface",
    "GPT2BPETokenizer": "gpt2-bpe",
    "NullTokenizer": "null",
}
"""--tokenizer-type (Megatron-LM's names) -> the library that reads it.

``GPT2BPETokenizer`` (``--vocab-file`` + ``--merge-file``, Megatron-LM's GPT-2 BPE) is read with
Hugging Face ``tokenizers``' byte-level BPE: megatron-core's own ``GPT2BPETokenizer``
(``megatron`` library) fetches the ``gpt2`` tokenizer from the Hugging Face hub and passes the
merges under a keyword ``AutoTokenizer`` ignores. ``NullTokenizer`` (``--vocab-size N``) is
megatron-core's: ids ``0..N-1`` written as whitespace-separated integers, end of document ``N``.
``Llama2Tokenizer`` is Megatron-LM's for a Llama-2/Mistral/Mixtral sentencepiece
``tokenizer.model``: its end of document is the model's ``eos`` (``</s>``), and the mask and
padding tokens, which such a model lacks, are appended after its pieces (ids ``N``, ``N+1``; see
:func:`can_append_tokens`).
Documents are encoded without the ``<s>`` that Megatron-LM's ``Llama2Tokenizer.tokenize`` puts
in front (a Megatron-LM dataset that has it trains unchanged: the ids are the same).
"""


def can_append_tokens(files: TokenizerFiles) -> bool:
    """Whether special tokens the vocabulary lacks may be appended to it.

    Yes for Hugging Face, GPT-2 BPE and NullTokenizer vocabularies, and for ``Llama2Tokenizer``
    (ids past the sentencepiece model, which encoding never produces and decoding skips). Not
    for ``SentencePieceTokenizer``: tools/train_tokenizer.py reserves the three tokens in the
    model, and a model without them is refused with that advice.
    """
    return files.library != "sentencepiece" or files.tokenizer_type == "Llama2Tokenizer"


def sentencepiece_special_tokens(files: TokenizerFiles) -> dict[str, str]:
    """The roles a Llama-2-style sentencepiece model names itself: its ``eos`` piece as the end
    of document (Megatron-LM's ``Llama2Tokenizer.eod``), its ``pad`` piece if it has one."""
    if files.tokenizer_type != "Llama2Tokenizer":
        return {}
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=os.fspath(files.model_file))
    named = {}
    if sp.eos_id() >= 0:
        named[EOD_TOKEN] = sp.id_to_piece(sp.eos_id())
    if sp.pad_id() >= 0:
        named[PAD_TOKEN] = sp.id_to_piece(sp.pad_id())
    return named


def own_special_tokens(files: TokenizerFiles) -> dict[str, str]:
    """The special tokens the tokenizer's own files name, by reserved token (see
    :func:`assign_special_ids`'s ``named``)."""
    if files.library == "sentencepiece":
        return sentencepiece_special_tokens(files)
    return hf_special_tokens(files)


HF_TOKENIZER_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
ENDOFTEXT_TOKEN = "<|endoftext|>"
"""GPT-2's (and GPT-NeoX's, StarCoder's, Qwen's) end of document: Megatron-LM's ``eod``."""
EOD_FALLBACKS = (EOD_TOKEN, ENDOFTEXT_TOKEN)
"""End-of-document tokens looked for when neither --eod-token nor the tokenizer names one."""


class TokenizerError(ValueError):
    """A tokenizer that cannot be used: missing file, missing special tokens, wrong type."""


@dataclass(frozen=True)
class SpecialTokenIds:
    """Ids of the reserved special tokens in one vocabulary."""

    mask: int
    eod: int
    pad: int


@dataclass(frozen=True)
class TokenizerOptions:
    """What else defines a tokenizer besides ``--tokenizer-type`` and ``--tokenizer-model``.

    Attributes:
        vocab_file, merge_file: GPT-2 BPE files (``GPT2BPETokenizer``).
        mask_token, eod_token, pad_token: the token of each role, as its text or its id
            (digits); None: the tokenizer's own (``tokenizer_config.json``), else the reserved
            tokens (see :func:`assign_special_ids`).
        vocab_size: ``NullTokenizer``'s ids (``0..N-1``); for other types the most ids the
            tokenizer may have (a check, as Megatron-LM sizes the model from the tokenizer).
        added_tokens: tokens appended to the vocabulary first, in this order (a tokenizer
            record's, so that a later tool reproduces its ids).
    """

    vocab_file: str | None = None
    merge_file: str | None = None
    mask_token: str | None = None
    eod_token: str | None = None
    pad_token: str | None = None
    vocab_size: int | None = None
    added_tokens: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, data_cfg: DataConfig) -> TokenizerOptions:
        return cls(
            vocab_file=data_cfg.vocab_file,
            merge_file=data_cfg.merge_file,
            mask_token=_option_text(data_cfg.mask_token),
            eod_token=_option_text(data_cfg.eod_token),
            pad_token=_option_text(data_cfg.pad_token),
            vocab_size=data_cfg.vocab_size,
        )

    @classmethod
    def from_record(cls, record: Any) -> TokenizerOptions:
        """Options that rebuild the tokenizer a :class:`TokenizerRecord` describes: its added
        tokens, then its special ids."""
        return cls(
            vocab_file=record.model if record.type == "GPT2BPETokenizer" else None,
            merge_file=getattr(record, "merge_file", None),
            mask_token=str(record.mask_id),
            eod_token=str(record.eod_id),
            pad_token=str(record.pad_id),
            vocab_size=_null_vocab_size(record),
            added_tokens=tuple(getattr(record, "added_tokens", None) or ()),
        )


def _null_vocab_size(record: Any) -> int | None:
    """NullTokenizer's --vocab-size of a record: its own ids less the end of document."""
    original = getattr(record, "original_vocab_size", None)
    if record.type != "NullTokenizer" or original is None:
        return None
    return int(original) - 1


def _option_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class TokenizerFiles:
    """Where a tokenizer lives on disk.

    Attributes:
        tokenizer_type: a key of :data:`TOKENIZER_LIBRARIES`.
        model_file: the file that defines the vocabulary (``.model``, ``tokenizer.json``, GPT-2's
            ``vocab.json``; None for ``NullTokenizer``).
        load_path: what the library loads: the ``.model`` file, or the folder holding
            ``tokenizer.json`` (and optionally ``tokenizer_config.json``).
        merge_file: GPT-2's ``merges.txt``.
    """

    tokenizer_type: str
    model_file: Path | None
    load_path: Path | None
    merge_file: Path | None = None

    @property
    def library(self) -> str:
        return TOKENIZER_LIBRARIES[self.tokenizer_type]


def _existing_file(value: str | os.PathLike, flag: str, what: str) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise TokenizerError(f"{flag} {str(p)!r} does not exist ({what})")
    if not p.is_file():
        raise TokenizerError(f"{flag} {str(p)!r} is a folder; it must be {what}")
    return p.resolve()


def resolve_tokenizer_files(
    path: str | os.PathLike | None,
    tokenizer_type: str,
    options: TokenizerOptions | None = None,
) -> TokenizerFiles:
    """Check that ``path`` (and ``options``' files) hold a tokenizer of ``tokenizer_type`` and
    say where its files are.

    A Hugging Face tokenizer may be given as its ``tokenizer.json`` or the folder holding it;
    ``GPT2BPETokenizer`` needs ``--vocab-file`` and ``--merge-file``; ``NullTokenizer`` needs
    ``--vocab-size``.

    Raises:
        TokenizerError: unknown type, missing file, or a folder without ``tokenizer.json``.
    """
    options = options or TokenizerOptions()
    if tokenizer_type not in TOKENIZER_LIBRARIES:
        raise TokenizerError(
            f"--tokenizer-type {tokenizer_type!r} is not supported; choose one of "
            f"{', '.join(TOKENIZER_LIBRARIES)}"
        )
    if tokenizer_type == "GPT2BPETokenizer":
        missing = [
            flag
            for flag, value in (("--vocab-file", options.vocab_file),
                                ("--merge-file", options.merge_file))
            if not value
        ]  # fmt: skip
        if missing:
            raise TokenizerError(
                f"--tokenizer-type GPT2BPETokenizer needs {' and '.join(missing)} (GPT-2's "
                f"vocab.json and merges.txt, as for Megatron-LM)"
            )
        vocab = _existing_file(options.vocab_file, "--vocab-file", "GPT-2's vocab.json")
        merges = _existing_file(options.merge_file, "--merge-file", "GPT-2's merges.txt")
        return TokenizerFiles(tokenizer_type, vocab, vocab, merges)
    if tokenizer_type == "NullTokenizer":
        if not options.vocab_size or options.vocab_size < 1:
            raise TokenizerError(
                "--tokenizer-type NullTokenizer needs --vocab-size N (token ids 0..N-1; the "
                "end-of-document id is N)"
            )
        return TokenizerFiles(tokenizer_type, None, None)
    if not path:
        raise TokenizerError(
            "--tokenizer-model is required (a sentencepiece .model file, or a Hugging Face "
            "tokenizer folder or tokenizer.json); train one with tools/train_tokenizer.py"
        )
    p = Path(path).expanduser()
    if not p.exists():
        raise TokenizerError(f"tokenizer model {str(p)!r} (--tokenizer-model) does not exist")
    if TOKENIZER_LIBRARIES[tokenizer_type] == "sentencepiece":
        if not p.is_file():
            raise TokenizerError(
                f"--tokenizer-model {str(p)!r} is a folder; {tokenizer_type} needs the "
                f".model file (for a tokenizer.json use --tokenizer-type HuggingFaceTokenizer)"
            )
        return TokenizerFiles(tokenizer_type, p.resolve(), p.resolve())
    model_file = p / HF_TOKENIZER_FILE if p.is_dir() else p
    if not model_file.is_file():
        raise TokenizerError(
            f"{str(p)!r} (--tokenizer-model) has no {HF_TOKENIZER_FILE}; HuggingFaceTokenizer "
            f"needs a tokenizers JSON (save a tokenizer with "
            f"AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR), or write one with "
            f"tools/train_tokenizer.py --hf-output)"
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
    if files.library != "huggingface" or not (files.load_path / HF_CONFIG_FILE).is_file():
        return {}
    config = files.load_path / HF_CONFIG_FILE
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


class EditableVocabulary(Protocol):
    """A vocabulary that special tokens can be appended to (see :func:`assign_special_ids`)."""

    def token_to_id(self, token: str) -> int | None: ...

    @property
    def vocab_size(self) -> int: ...

    def add_special_token(self, token: str) -> int:
        """Append ``token`` as a special token; return its id (the old size)."""
        ...


ROLE_FLAGS = {MASK_TOKEN: "--mask-token", EOD_TOKEN: "--eod-token", PAD_TOKEN: "--pad-token"}


def parse_token_option(value: str | int | None) -> str | int | None:
    """A --mask-token/--eod-token/--pad-token value: an id (digits) or a token's text."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return value


def assign_special_ids(
    vocab: EditableVocabulary,
    source: str | os.PathLike,
    *,
    mask_token: str | int | None = None,
    eod_token: str | int | None = None,
    pad_token: str | int | None = None,
    named: dict[str, str | int] | None = None,
    can_add: bool = True,
) -> tuple[SpecialTokenIds, list[str]]:
    """The mask, end-of-document and padding ids of ``vocab``, adding tokens it lacks.

    Each role is the token the flag gives (its text or its id), else the one the tokenizer
    names (``named``: reserved token -> its token, from ``tokenizer_config.json``), else:

    * end of document: ``<|eod|>`` or ``<|endoftext|>`` (GPT-2's, Megatron-LM's ``eod``); never
      added (the data's documents end with it);
    * mask: ``<|mask|>``, appended when the vocabulary lacks it; an id equal to the vocabulary
      size (MegaDLMs' ``--mask-token 50277`` for GPT-NeoX's 50277 tokens) appends it there;
    * padding: the named pad if it differs from the other two, else ``<|pad|>``, appended when
      missing. Padding is kept apart from the end of document (Megatron-LM lets them share an
      id): a DLM excludes padding from the loss and stops sampling at the end of document.

    Tokens are appended in that order (mask, then padding), so the ids are reproducible.

    Args:
        vocab: the tokenizer's vocabulary; appended to in place.
        source: the tokenizer, named in errors.
        mask_token, eod_token, pad_token: the flags' values (None: not given).
        named: the tokenizer's own roles (:func:`hf_special_tokens`).
        can_add: whether tokens may be appended (not to a sentencepiece model).

    Returns:
        The ids and the tokens appended, in order.

    Raises:
        TokenizerError: a token or id the vocabulary lacks (naming the flag), no end-of-document
            token, or two roles on one id.
    """
    named = named or {}
    added: list[str] = []
    missing: list[str] = []

    def resolve(role: str, value: str | int, given: bool, may_add: bool) -> int | None:
        flag = ROLE_FLAGS[role] if given else f"the tokenizer's {HF_SPECIAL_ROLES[role]}"
        size = vocab.vocab_size
        if isinstance(value, int):
            if 0 <= value < size:
                return value
            if may_add and can_add and value == size:
                if vocab.token_to_id(role) is not None:
                    raise TokenizerError(
                        f"{flag} {value}: {source} already has {role} (id "
                        f"{vocab.token_to_id(role)}); name it or an id below {size}"
                    )
                added.append(role)
                return vocab.add_special_token(role)
            hint = f"; {size} appends {role}" if may_add and can_add else ""
            raise TokenizerError(
                f"{flag} {value}: no such id in {source} (ids 0..{size - 1}{hint})"
            )
        token_id = vocab.token_to_id(value)
        if token_id is not None:
            return token_id
        if may_add and can_add:
            added.append(value)
            return vocab.add_special_token(value)
        if not given and value == role:
            missing.append(value)
            return None
        raise TokenizerError(
            f"{flag} {value!r} is not in the vocabulary of {source}; name a token it has (or "
            f"its id)"
        )

    eod_value = parse_token_option(eod_token)
    eod_given = eod_value is not None
    if eod_value is None:
        eod_value = parse_token_option(named.get(EOD_TOKEN))
    if eod_value is None:
        eod_value = next((t for t in EOD_FALLBACKS if vocab.token_to_id(t) is not None), EOD_TOKEN)
    eod = resolve(EOD_TOKEN, eod_value, eod_given, may_add=False)
    mask_value = parse_token_option(mask_token)
    mask_given = mask_value is not None
    if mask_value is None:
        mask_value = parse_token_option(named.get(MASK_TOKEN)) or MASK_TOKEN
    mask = resolve(MASK_TOKEN, mask_value, mask_given, may_add=True)
    pad_value = parse_token_option(pad_token)
    pad_given = pad_value is not None
    pad = None
    if not pad_given:
        own = parse_token_option(named.get(PAD_TOKEN))
        if own is not None:
            own_id = own if isinstance(own, int) else vocab.token_to_id(own)
            if own_id is not None and own_id not in (eod, mask) and own_id < vocab.vocab_size:
                pad = own_id
        pad_value = PAD_TOKEN
    if pad is None:
        pad = resolve(PAD_TOKEN, pad_value, pad_given, may_add=True)
    if missing:
        raise TokenizerError(
            f"tokenizer {str(source)!r} lacks the special token(s) "
            f"{', '.join(t for t in SPECIAL_TOKENS if t in missing)}. "
            f"A DLM needs {', '.join(SPECIAL_TOKENS)} in the vocabulary (or tokens named with "
            f"--mask-token, --eod-token, --pad-token). Train a tokenizer with "
            f"tools/train_tokenizer.py (it reserves them), or add them to yours: sentencepiece "
            f"`control_symbols=[...]` at training time; a Hugging Face tokenizer gets a missing "
            f"mask and padding token appended."
            + (
                ""
                if can_add
                else " A Llama-2/Mistral tokenizer.model: --tokenizer-type Llama2Tokenizer (end "
                "of document </s>; mask and padding appended after its pieces)."
            )
        )
    ids = {"--mask-token": mask, "--eod-token": eod, "--pad-token": pad}
    if len(set(ids.values())) != 3:
        raise TokenizerError(
            f"tokenizer {str(source)!r}: the special tokens must be three different tokens, got "
            f"ids {ids}: a DLM masks with one, ends documents with another and pads with a third"
        )
    return SpecialTokenIds(mask=mask, eod=eod, pad=pad), added  # type: ignore[arg-type]


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


def gpt2_bpe_tokenizer(files: TokenizerFiles):
    """A ``tokenizers.Tokenizer`` for GPT-2 BPE files: byte-level BPE with GPT-2's
    pre-tokenisation (no prefix space), so it gives the ids Megatron-LM's ``GPT2BPETokenizer``
    gives. ``<|endoftext|>`` is special (decoding drops it) but text is never matched against
    special tokens: as in Megatron-LM, ``"<|endoftext|>"`` in a document is encoded as text.

    Raises:
        TokenizerError: the files are not GPT-2 BPE files (naming the flags).
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    try:
        bpe = models.BPE.from_file(str(files.model_file), str(files.merge_file))
    except Exception as exc:
        raise TokenizerError(
            f"--vocab-file {str(files.model_file)!r} / --merge-file {str(files.merge_file)!r} "
            f"are not GPT-2 BPE files (a vocab.json and a merges.txt): {exc}"
        ) from exc
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    if tokenizer.token_to_id(ENDOFTEXT_TOKEN) is not None:
        tokenizer.add_special_tokens([AddedToken(ENDOFTEXT_TOKEN, special=True, normalized=False)])
    tokenizer.encode_special_tokens = True
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def tokenizers_pieces(tokenizer) -> list[str | None]:
    """The pieces of a ``tokenizers.Tokenizer`` in id order (None for an id without one)."""
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    by_id: list[str | None] = [None] * size
    for piece, i in vocab.items():
        if 0 <= i < size:
            by_id[i] = piece
    return by_id


def null_pieces(vocab_size: int) -> list[str]:
    """NullTokenizer's vocabulary: the ids as text, then its end of document."""
    return [str(i) for i in range(vocab_size)] + [EOD_TOKEN]


def null_encode(text: str, size: int) -> list[int]:
    """NullTokenizer's ids of ``text``: whitespace-separated integers below ``size``
    (megatron-core's NullTokenizer reads text the same way).

    Raises:
        TokenizerError: a word that is not such an integer.
    """
    try:
        ids = [int(word) for word in text.split()]
    except ValueError as exc:
        raise TokenizerError(
            f"NullTokenizer reads whitespace-separated token ids, got {text[:40]!r}"
        ) from exc
    bad = [i for i in ids if not 0 <= i < size]
    if bad:
        raise TokenizerError(f"NullTokenizer: ids {bad[:5]} are outside 0..{size - 1}")
    return ids


def tokenizer_source(files: TokenizerFiles) -> str:
    """How errors name a tokenizer."""
    if files.library == "null":
        return "NullTokenizer"
    return str(files.model_file)


def check_vocab_size_option(vocab_size: int, options: TokenizerOptions, files: TokenizerFiles):
    """--vocab-size with a tokenizer that has files: the model is sized from the tokenizer (as
    in Megatron-LM), so the flag can only be a bound the tokenizer must respect."""
    if files.library == "null" or options.vocab_size is None:
        return
    if vocab_size > options.vocab_size:
        raise TokenizerError(
            f"--vocab-size {options.vocab_size}: the tokenizer {tokenizer_source(files)} has "
            f"{vocab_size} ids (special tokens appended included); the model is sized from "
            f"the tokenizer, so leave --vocab-size out or give at least {vocab_size}"
        )


CHECK_TEXT = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # w5 w6\n\tÉté 中文"
"""Text a Hugging Face tokenizer must encode the same through transformers and its JSON."""


class DLMTokenizer:
    """A text tokenizer with the special ids a DLM needs.

    Build with :func:`load_tokenizer` or :func:`build_tokenizer`. sentencepiece and Hugging Face
    tokenizers tokenize through megatron-core's tokenizer (``megatron_tokenizer``); GPT-2 BPE
    files through ``tokenizers``' byte-level BPE (:func:`gpt2_bpe_tokenizer`); NullTokenizer
    reads integers as megatron-core's does (:func:`null_encode`). The special ids come from
    :func:`assign_special_ids`: the flags, the tokenizer's own roles, or the reserved tokens,
    appended when missing (``added_tokens``).
    Literal special-token text in the input is tokenized as text where the tokenizer says so
    (``split_special_tokens``; always for GPT-2 BPE and sentencepiece).

    Args:
        path: sentencepiece ``.model``, or a Hugging Face ``tokenizer.json`` or its folder
            (None for GPT2BPETokenizer and NullTokenizer).
        tokenizer_type: a key of :data:`TOKENIZER_LIBRARIES` (default sentencepiece).
        options: vocab/merge files, special tokens, --vocab-size (:class:`TokenizerOptions`).
    """

    def __init__(
        self,
        path: str | os.PathLike | None,
        tokenizer_type: str = "SentencePieceTokenizer",
        options: TokenizerOptions | None = None,
    ):
        self.options = options = options or TokenizerOptions()
        self.files = resolve_tokenizer_files(path, tokenizer_type, options)
        self.megatron_tokenizer = None
        self._tok = None  # tokenizers.Tokenizer (GPT-2 BPE)
        library = self.files.library
        if library in ("sentencepiece", "huggingface"):
            self._load_megatron(library)
        elif library == "gpt2-bpe":
            self._tok = gpt2_bpe_tokenizer(self.files)
            self._pieces = tokenizers_pieces(self._tok)
        else:
            self._pieces = null_pieces(int(options.vocab_size))
        warn_if_spaces_as_marker(self.files)
        self._index = {piece: i for i, piece in enumerate(self._pieces) if piece is not None}
        self.original_vocab_size = len(self._pieces)
        for token in options.added_tokens:
            if token not in self._index:
                self.add_special_token(token)
        self.special_ids, _ = assign_special_ids(
            self,
            tokenizer_source(self.files),
            mask_token=options.mask_token,
            eod_token=options.eod_token,
            pad_token=options.pad_token,
            named=own_special_tokens(self.files),
            can_add=can_append_tokens(self.files),
        )
        check_vocab_size_option(self.vocab_size, options, self.files)
        # Llama2Tokenizer encodes exactly as its model (and Megatron-LM) does: a literal "▁" is
        # a space there, as in the model's own Hugging Face tokenizer.
        keeps_marker = self.tokenizer_type == "SentencePieceTokenizer"
        self._marker_ids = marker_byte_ids(self._index.get) if keeps_marker else None

    def _load_megatron(self, library: str) -> None:
        from megatron.core.tokenizers import MegatronTokenizer

        kwargs: dict[str, Any] = {}
        if library == "huggingface":
            kwargs["use_fast"] = True
        try:
            self.megatron_tokenizer = MegatronTokenizer.from_pretrained(
                str(self.files.load_path), metadata_path={"library": library}, **kwargs
            )
        except Exception as exc:
            raise TokenizerError(
                f"cannot load {self.files.tokenizer_type} from {str(self.files.model_file)!r}: "
                f"{exc}"
            ) from exc
        if library == "huggingface" and not hf_split_special_tokens(self.files):
            logger.warning(
                "%s: split_special_tokens is not set, so special-token text in documents is "
                "encoded as the special id; tools/train_tokenizer.py --hf-output sets it",
                self.files.load_path / HF_CONFIG_FILE,
            )
        self._pieces = list(self.megatron_tokenizer.vocab)
        if library == "huggingface":
            self._check_transformers_encodes_as_its_json()

    def _check_transformers_encodes_as_its_json(self) -> None:
        """transformers may load a folder with its own tokenizer class, rebuilt from the
        vocabulary (``Qwen2Tokenizer`` in transformers 5), instead of its ``tokenizer.json``:
        preprocessing (which reads the JSON) and sampling would then give other ids."""
        from tokenizers import Tokenizer

        expected = Tokenizer.from_file(str(self.files.model_file))
        expected = expected.encode(CHECK_TEXT, add_special_tokens=False).ids
        got = self.megatron_tokenizer.tokenize(CHECK_TEXT)
        if got != expected:
            hf = self.megatron_tokenizer._tokenizer.tokenizer
            raise TokenizerError(
                f"--tokenizer-model {self.files.load_path}: transformers loads it as "
                f"{type(hf).__name__}, which encodes differently from its {HF_TOKENIZER_FILE} "
                f"({got[:8]} vs {expected[:8]}); set tokenizer_class in {HF_CONFIG_FILE} to "
                f"PreTrainedTokenizerFast, or fix its tokenizer.json"
            )

    def add_special_token(self, token: str) -> int:
        """Append ``token`` to the vocabulary as a special token; return its id.

        Raises:
            TokenizerError: a ``SentencePieceTokenizer`` model (its vocabulary is fixed at
                training time; ``Llama2Tokenizer`` appends ids past it).
        """
        library = self.files.library
        expected = len(self._pieces)
        if not can_append_tokens(self.files):
            raise TokenizerError(
                f"{self.files.model_file}: cannot add {token!r} to a sentencepiece model; "
                f"train it with the token (tools/train_tokenizer.py reserves <|mask|>, "
                f"<|eod|>, <|pad|>)"
            )
        if library == "huggingface":
            from tokenizers import AddedToken

            hf = self.megatron_tokenizer._tokenizer.tokenizer  # the transformers tokenizer
            hf.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
            got = hf.convert_tokens_to_ids(token)
        elif library == "gpt2-bpe":
            from tokenizers import AddedToken

            self._tok.add_special_tokens([AddedToken(token, special=True, normalized=False)])
            got = self._tok.token_to_id(token)
        else:
            got = expected
        if got != expected:
            raise TokenizerError(f"appending {token!r} gave id {got}, expected {expected}")
        self._pieces.append(token)
        self._index[token] = got
        logger.info("%s: appended %r as id %d", tokenizer_source(self.files), token, got)
        return got

    @property
    def added_tokens(self) -> tuple[str, ...]:
        """Tokens appended to the tokenizer's own vocabulary (ids ``original_vocab_size``...)."""
        return tuple(self._pieces[self.original_vocab_size :])  # type: ignore[arg-type]

    @property
    def special_tokens(self) -> dict[str, str | None]:
        """The token of each role: ``{"mask_token": ..., "eos_token": ..., "pad_token": ...}``."""
        return {
            "mask_token": self._pieces[self.mask_id],
            "eos_token": self._pieces[self.eod],
            "pad_token": self._pieces[self.pad],
        }

    @property
    def merge_file(self) -> Path | None:
        return self.files.merge_file

    @property
    def vocab_size(self) -> int:
        """Number of token ids, appended tokens included (before padding for tensor
        parallelism)."""
        return len(self._pieces)

    @property
    def mask_id(self) -> int:
        """Id of the mask token."""
        return self.special_ids.mask

    @property
    def eod(self) -> int:
        """Id of the end-of-document token."""
        return self.special_ids.eod

    @property
    def eos(self) -> int:
        """Alias of :attr:`eod` (megatron-core checks both for pad collisions)."""
        return self.special_ids.eod

    @property
    def pad(self) -> int:
        """Id of the padding token."""
        return self.special_ids.pad

    @property
    def special_tokens_dict(self) -> dict[str, int]:
        """Special ids by role (megatron-core checks that ``pad`` collides with none)."""
        return {"mask_token": self.mask_id, "eod_token": self.eod, "pad_token": self.pad}

    @property
    def model_path(self) -> Path | None:
        """The file that defines the vocabulary (GPT-2's vocab.json; None for NullTokenizer)."""
        return self.files.model_file

    @property
    def tokenizer_type(self) -> str:
        return self.files.tokenizer_type

    @property
    def pieces(self) -> list[str | None]:
        """The vocabulary: piece of each id."""
        return list(self._pieces)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary piece, or None if the vocabulary lacks it."""
        return self._index.get(token)

    @cached_property
    def model_sha256(self) -> str:
        """sha256 of the model file (provenance)."""
        return model_sha256(self.files, self.options)

    @cached_property
    def vocab_sha256(self) -> str:
        """Fingerprint of the vocabulary (see :func:`vocab_sha256`)."""
        return vocab_sha256(self._pieces)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` (no special tokens added); they decode back to ``text``
        (a literal "▁" as byte tokens, see :func:`encode_keeping_marker`)."""
        if self._tok is not None:
            return self._tok.encode(text, add_special_tokens=False).ids
        if self.files.library == "null":
            return null_encode(text, self.original_vocab_size)
        return encode_keeping_marker(self.megatron_tokenizer.tokenize, text, self._marker_ids)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens decode to nothing."""
        if self._tok is not None:
            return self._tok.decode(list(ids), skip_special_tokens=True)
        if self.files.library == "null":
            return " ".join(str(i) for i in ids if i < self.original_vocab_size - 1)
        if self.files.library == "sentencepiece" and self.added_tokens:  # not in the model
            ids = [i for i in ids if i < self.original_vocab_size]
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


def model_sha256(files: TokenizerFiles, options: TokenizerOptions) -> str:
    """sha256 of the tokenizer's files (provenance): the model file, GPT-2's two files, or
    NullTokenizer's size."""
    if files.library == "null":
        return hashlib.sha256(f"null:{options.vocab_size}".encode()).hexdigest()
    if files.merge_file is None:
        return file_sha256(files.model_file)
    digest = hashlib.sha256()
    for path in (files.model_file, files.merge_file):
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def load_tokenizer(
    path: str | os.PathLike | None,
    tokenizer_type: str = "SentencePieceTokenizer",
    options: TokenizerOptions | None = None,
) -> DLMTokenizer:
    """Load a tokenizer and resolve its special ids (see :class:`DLMTokenizer`)."""
    return DLMTokenizer(path, tokenizer_type, options)


def build_tokenizer(data_cfg: DataConfig) -> DLMTokenizer:
    """The tokenizer of a run: ``--tokenizer-type``, ``--tokenizer-model``, ``--vocab-file``,
    ``--merge-file``, ``--mask-token``, ``--eod-token``, ``--pad-token``, ``--vocab-size``."""
    return load_tokenizer(
        data_cfg.tokenizer_model, data_cfg.tokenizer_type, TokenizerOptions.from_config(data_cfg)
    )


def record_mismatch_error(
    exc: TokenizerError, record: Any, flag: str, path: str | os.PathLike | None
) -> TokenizerError:
    """The error for a tokenizer, given for a checkpoint or dataset, that cannot hold the
    record's special ids. The record's ids reach the tokenizer as --mask-token/--eod-token/
    --pad-token internally: the message names the checkpoint's ids instead of flags the user
    never passed."""
    reason = str(exc)
    for role, name in (("mask", "mask"), ("eod", "end-of-document"), ("pad", "padding")):
        token_id = getattr(record, f"{role}_id")
        reason = reason.replace(
            f"{ROLE_FLAGS[f'<|{role}|>']} {token_id}", f"its {name} id {token_id}"
        )
    return TokenizerError(
        f"{flag} {path}: this tokenizer does not match the checkpoint's ({record.vocab_size} ids; "
        f"mask {record.mask_id}, end of document {record.eod_id}, padding {record.pad_id}): "
        f"{reason}"
    )


def load_recorded_tokenizer(
    record: Any,
    tokenizer_model: str | os.PathLike | None = None,
    flag: str = "--tokenizer-model",
) -> DLMTokenizer:
    """The tokenizer a :class:`~megatron_dlm.checkpoint.TokenizerRecord` describes, with the
    same ids: its files (or ``tokenizer_model`` instead), its appended tokens, its special ids.

    Raises:
        TokenizerError: no tokenizer path recorded or given, or one whose vocabulary or special
            ids differ from the record's (naming ``flag``).
    """
    path = tokenizer_model or (None if record.type == "GPT2BPETokenizer" else record.model)
    if not path and record.type not in ("GPT2BPETokenizer", "NullTokenizer"):
        raise TokenizerError(f"the checkpoint records no tokenizer path: give {flag}")
    options = TokenizerOptions.from_record(record)
    try:
        tokenizer = load_tokenizer(path, record.type or "SentencePieceTokenizer", options)
    except TokenizerError as exc:
        if tokenizer_model is None:
            raise
        raise record_mismatch_error(exc, record, flag, path) from exc
    from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord

    differences = TokenizerRecord.from_tokenizer(tokenizer).differences(record)
    if differences:
        raise TokenizerError(
            f"{flag} {path}: this tokenizer does not match the checkpoint's: "
            + "; ".join(
                f"{n}: checkpoint {theirs!r}, now {mine!r}" for n, mine, theirs in differences
            )
        )
    return tokenizer
