"""The tokenizer of an imported Hugging Face model, with the special tokens a DLM needs.

A masked diffusion LM needs a mask token and distinct end-of-document and padding tokens. An AR
model's tokenizer usually has an end-of-sequence token, sometimes a padding token equal to it,
and no mask token. :func:`import_tokenizer` copies the folder's ``tokenizer.json`` and
``tokenizer_config.json`` and

* uses the tokens the user names (``--mask-token``, ``--eod-token``, ``--pad-token``: a token
  string or an id), else the tokenizer's own ``mask_token``/``eos_token``/``pad_token``;
* appends a missing mask token (``<|mask|>``) and, when the tokenizer has no padding token
  distinct from its end-of-sequence token, ``<|pad|>``, as special tokens after the last id (the
  model's embedding grows by those rows);
* names the three roles in ``tokenizer_config.json`` (``mask_token``, ``eos_token``,
  ``pad_token``), which is where :class:`megatron_dlm.data.tokenizer.DLMTokenizer` and
  ``AutoTokenizer`` read them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from megatron_dlm.data.tokenizer import HF_CONFIG_FILE, HF_TOKENIZER_FILE, MASK_TOKEN, PAD_TOKEN

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
    from tokenizers import AddedToken, Tokenizer

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

    def lookup(role: str, flag: str, value: str | int | None, *, may_add: bool) -> int | None:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            token_id = int(value)
            if not 0 <= token_id < tokenizer.get_vocab_size(with_added_tokens=True):
                raise TokenizerImportError(f"{flag} {token_id}: no such id in {json_file}")
            return token_id
        if value is None:
            return None
        token_id = tokenizer.token_to_id(value)
        if token_id is None and may_add:
            tokenizer.add_special_tokens([AddedToken(value, special=True, normalized=False)])
            token_id = tokenizer.token_to_id(value)
            logger.info("%s: added %r to the vocabulary as id %d", flag, value, token_id)
        if token_id is None:
            raise TokenizerImportError(
                f"{flag} {value!r} is not in the vocabulary of {json_file}; name a token it "
                "has (or its id)"
            )
        return token_id

    eod = lookup("eos_token", "--eod-token", eod_token or own.get("eos_token"), may_add=False)
    if eod is None:
        raise TokenizerImportError(
            f"{source}: the tokenizer names no end-of-sequence token (eos_token): pass "
            "--eod-token TOKEN (the token that ends a document)"
        )
    mask = lookup("mask_token", "--mask-token", mask_token or own.get("mask_token") or MASK_TOKEN,
                  may_add=True)  # fmt: skip
    pad_value = pad_token or own.get("pad_token")
    pad = lookup("pad_token", "--pad-token", pad_value, may_add=True)
    if pad_token is None and pad in (None, eod, mask):
        pad = lookup("pad_token", "--pad-token", PAD_TOKEN, may_add=True)
    ids = {"--mask-token": mask, "--eod-token": eod, "--pad-token": pad}
    if len(set(ids.values())) != 3:
        raise TokenizerImportError(
            f"the special tokens must be three different tokens, got ids {ids}: a DLM masks "
            "with one, ends documents with another and pads with a third"
        )
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    added = [tokenizer.id_to_token(i) for i in range(original, size)]
    output.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(output / HF_TOKENIZER_FILE))
    new_ids = range(original, size)
    _write_config(source, output, tokenizer, mask=mask, eod=eod, pad=pad, added=new_ids)
    return ImportedTokenizer(output, original, size, mask, eod, pad, added)


def _write_config(source: Path, output: Path, tokenizer, *, mask: int, eod: int, pad: int,
                  added: range) -> None:  # fmt: skip
    """tokenizer_config.json: the source's, with the three roles named and new tokens listed."""
    path = source / HF_CONFIG_FILE
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
    }  # fmt: skip
    config.update(
        mask_token=tokenizer.id_to_token(mask),
        eos_token=tokenizer.id_to_token(eod),
        pad_token=tokenizer.id_to_token(pad),
    )
    if added and "added_tokens_decoder" in config:
        for token_id in added:
            config["added_tokens_decoder"][str(token_id)] = {
                "content": tokenizer.id_to_token(token_id), "lstrip": False, "normalized": False,
                "rstrip": False, "single_word": False, "special": True,
            }  # fmt: skip
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (output / HF_CONFIG_FILE).write_text(text, encoding="utf-8")
    special_map = source / "special_tokens_map.json"  # older folders name the roles here too
    if special_map.is_file():
        values = json.loads(special_map.read_text(encoding="utf-8"))
        values.update({k: config[k] for k in ("mask_token", "eos_token", "pad_token")})
        text = json.dumps(values, indent=2, ensure_ascii=False) + "\n"
        (output / special_map.name).write_text(text, encoding="utf-8")
