"""The tokenizer of an imported Hugging Face model, with the special tokens a DLM needs.

A masked diffusion LM needs a mask token and distinct end-of-document and padding tokens. An AR
model's tokenizer usually has an end-of-sequence token, sometimes a padding token equal to it,
and no mask token. :func:`import_tokenizer` copies the folder's ``tokenizer.json`` and
``tokenizer_config.json`` and

* resolves the roles as training does (:func:`megatron_dlm.data.tokenizer.assign_special_ids`):
  the tokens the user names (``--mask-token``, ``--eod-token``, ``--pad-token``: a token
  string or an id), else the tokenizer's own ``mask_token``/``eos_token``/``pad_token``;
  a missing mask token (``<|mask|>``) and, when the tokenizer has no padding token distinct
  from its end-of-sequence token, ``<|pad|>`` are appended as special tokens after the last id
  (the model's embedding grows by those rows);
* names the three roles in ``tokenizer_config.json`` (``mask_token``, ``eos_token``,
  ``pad_token``), which is where :class:`megatron_dlm.data.tokenizer.DLMTokenizer` and
  ``AutoTokenizer`` read them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from megatron_dlm.data.hf_tokenizer import write_tokenizer_config
from megatron_dlm.data.tokenizer import (
    EOD_TOKEN,
    HF_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    MASK_TOKEN,
    PAD_TOKEN,
    TokenizerError,
    assign_special_ids,
)

logger = logging.getLogger(__name__)


class TokenizerImportError(ValueError):
    """The model's tokenizer cannot be used as given (missing files, bad special tokens)."""


@dataclass
class ImportedTokenizer:
    """The tokenizer folder written for an imported model."""

    directory: Path
    original_size: int
    """Tokens of the source tokenizer; ids from here on were added by the import."""
    size: int
    mask_id: int
    eod_id: int
    pad_id: int
    added: list[str] = field(default_factory=list)
    """Tokens appended by the import (ids ``original_size`` ...)."""


def _token_text(value) -> str | None:
    """A special token in tokenizer_config.json: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _own_roles(source: Path, model_config: dict) -> dict[str, str | int]:
    """The roles the source tokenizer itself names (strings), or the model config's ids."""
    roles: dict[str, str | int] = {}
    for name in (HF_CONFIG_FILE, "special_tokens_map.json"):
        path = source / name
        if path.is_file():
            values = json.loads(path.read_text(encoding="utf-8"))
            for role in ("mask_token", "eos_token", "pad_token"):
                token = _token_text(values.get(role))
                if token and role not in roles:
                    roles[role] = token
    for role, key in (("eos_token", "eos_token_id"), ("pad_token", "pad_token_id")):
        value = model_config.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if role not in roles and isinstance(value, int):
            roles[role] = value
    return roles


def import_tokenizer(
    source: str | Path,
    output: str | Path,
    *,
    model_config: dict | None = None,
    mask_token: str | None = None,
    eod_token: str | None = None,
    pad_token: str | None = None,
) -> ImportedTokenizer:
    """Write ``source``'s tokenizer, completed with the DLM's special tokens, to ``output``.

    Args:
        source: the Hugging Face model folder (``tokenizer.json``, ``tokenizer_config.json``).
        output: a new folder.
        model_config: the folder's config.json (``eos_token_id``/``pad_token_id`` fallbacks).
        mask_token, eod_token, pad_token: a token (string) or an id (digits); default: the
            tokenizer's own, see the module docstring.

    Raises:
        TokenizerImportError: no ``tokenizer.json``, an unknown id, an end-of-document token
            that is not in the vocabulary, or two roles on one token.
    """
    from tokenizers import Tokenizer

    source, output = Path(source), Path(output)
    json_file = source / HF_TOKENIZER_FILE
    if not json_file.is_file():
        raise TokenizerImportError(
            f"{source} has no {HF_TOKENIZER_FILE}: save the model's tokenizer as a fast "
            "tokenizer first (AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR))"
        )
    try:
        tokenizer = Tokenizer.from_file(str(json_file))
    except Exception as exc:
        raise TokenizerImportError(f"{json_file} is not a tokenizers JSON ({exc})") from exc
    original = tokenizer.get_vocab_size(with_added_tokens=True)
    own = _own_roles(source, model_config or {})
    vocabulary = _Vocabulary(tokenizer)
    named = {MASK_TOKEN: own.get("mask_token"), EOD_TOKEN: own.get("eos_token"),
             PAD_TOKEN: own.get("pad_token")}  # fmt: skip
    if eod_token is None and named[EOD_TOKEN] is None:
        raise TokenizerImportError(
            f"{source}: the tokenizer names no end-of-sequence token (eos_token): pass "
            "--eod-token TOKEN (the token that ends a document)"
        )
    try:  # the same rules as training's tokenizer (megatron_dlm.data.tokenizer)
        ids, added = assign_special_ids(
            vocabulary,
            json_file,
            mask_token=mask_token,
            eod_token=eod_token,
            pad_token=pad_token,
            named={k: v for k, v in named.items() if v is not None},
        )
    except TokenizerError as exc:
        raise TokenizerImportError(str(exc)) from exc
    for token in added:
        logger.info("added %r to the vocabulary as id %d", token, tokenizer.token_to_id(token))
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output / HF_TOKENIZER_FILE))
    roles = {"mask_token": tokenizer.id_to_token(ids.mask),
             "eos_token": tokenizer.id_to_token(ids.eod),
             "pad_token": tokenizer.id_to_token(ids.pad)}  # fmt: skip
    new_tokens = {i: tokenizer.id_to_token(i) for i in range(original, size)}
    write_tokenizer_config(source / HF_CONFIG_FILE, output, roles, new_tokens)
    return ImportedTokenizer(
        output, original, size, ids.mask, ids.eod, ids.pad, list(new_tokens.values())
    )


class _Vocabulary:
    """A ``tokenizers.Tokenizer`` as :func:`assign_special_ids` edits it."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def add_special_token(self, token: str) -> int:
        from tokenizers import AddedToken

        self.tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        return self.tokenizer.token_to_id(token)
