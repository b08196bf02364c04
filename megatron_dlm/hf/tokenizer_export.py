"""Tokenizer files for an exported folder: ``tokenizer.json`` + ``tokenizer_config.json``.

transformers v5 mis-reads sentencepiece ``.model`` files (empty or ``<unk>`` output), so exports
carry a ``tokenizers`` JSON that ``AutoTokenizer.from_pretrained(folder)`` loads as a
``PreTrainedTokenizerFast``:

* a Hugging Face tokenizer (``HuggingFaceTokenizer``, or any ``tokenizer.json``) is copied, with
  the ``tokenizer_config.json`` beside it or, if there is none, one naming the special tokens;
* a sentencepiece model is converted by ``megatron_dlm.data.hf_tokenizer.export_hf_tokenizer``
  (the exact conversion tools/train_tokenizer.py --hf-output uses).

BPE merges are written in the form every ``tokenizers`` release reads (:func:`write_portable`),
so the folder's tokenizer also loads under transformers 4.38.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"


class TokenizerExportError(NotImplementedError):
    """The tokenizer cannot be exported (unsupported here, missing, or not the model's)."""


def _is_hf_tokenizer(path: Path, tokenizer_type: str | None) -> bool:
    if path.is_dir():
        return (path / TOKENIZER_FILE).is_file()
    return tokenizer_type == "HuggingFaceTokenizer" or path.suffix == ".json"


def export_tokenizer(
    tokenizer_model_path: str | Path,
    tokenizer_type: str | None,
    output_dir: str | Path,
    *,
    vocab_size: int | None = None,
    special_ids: dict[str, int] | None = None,
    model_max_length: int | None = None,
    vocab_sha256: str | None = None,
) -> list[str]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``output_dir``.

    Args:
        tokenizer_model_path: a ``tokenizer.json`` (or its folder), or a sentencepiece
            ``.model``.
        tokenizer_type: ``HuggingFaceTokenizer`` or ``SentencePieceTokenizer`` (the checkpoint's
            record); None guesses from the path.
        vocab_size: the model's vocabulary; the tokenizer must have exactly this many tokens.
        special_ids: ``{"mask_token": id, "eos_token": id, "pad_token": id}`` for a written
            ``tokenizer_config.json``, and checked against the tokenizer.
        model_max_length: recorded in a written ``tokenizer_config.json``.
        vocab_sha256: the fingerprint the checkpoint recorded
            (:func:`megatron_dlm.data.tokenizer.vocab_sha256`); the exported vocabulary must
            have it.

    Returns:
        The file names written.

    Raises:
        TokenizerExportError: missing file, a sentencepiece model while the converter module is
            unavailable, or a tokenizer whose vocabulary does not match the model.
    """
    path = Path(tokenizer_model_path).expanduser()
    output_dir = Path(output_dir)
    if not path.exists():
        raise TokenizerExportError(
            f"tokenizer model {str(path)!r} does not exist; pass --tokenizer-model PATH "
            "(a tokenizer.json or sentencepiece .model) or --skip-tokenizer"
        )
    if _is_hf_tokenizer(path, tokenizer_type):
        source = path / TOKENIZER_FILE if path.is_dir() else path
        shutil.copyfile(source, output_dir / TOKENIZER_FILE)
        beside = source.parent / TOKENIZER_CONFIG_FILE
        if beside.is_file():
            shutil.copyfile(beside, output_dir / TOKENIZER_CONFIG_FILE)
    else:
        _export_sentencepiece(path, output_dir)
    write_portable(output_dir / TOKENIZER_FILE)
    tokens = _check_vocabulary(
        output_dir / TOKENIZER_FILE, vocab_size, special_ids or {}, vocab_sha256
    )
    if not (output_dir / TOKENIZER_CONFIG_FILE).is_file():
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "clean_up_tokenization_spaces": False,
            "model_max_length": model_max_length or (1 << 30),
            **tokens,
        }
        text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
        (output_dir / TOKENIZER_CONFIG_FILE).write_text(text, encoding="utf-8")
    return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE]


def write_portable(tokenizer_file: Path) -> bool:
    """Rewrite a BPE ``tokenizer.json`` so that ``tokenizers`` < 0.20 (transformers 4.38,
    LLaDA's pin) reads it: merges as ``"a b"`` strings, not ``["a", "b"]`` pairs.

    Both forms mean the same merges and newer releases read either. Left as it is when the
    string form would be ambiguous (a merge part holds a space) or lose meaning
    (``ignore_merges``, which older releases do not know): those tokenizers need a newer
    ``tokenizers`` anyway. Returns whether the file was rewritten.
    """
    data = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    merges = model.get("merges")
    if model.get("type") != "BPE" or not merges or not isinstance(merges[0], list):
        return False
    if model.get("ignore_merges") or any(" " in part for pair in merges for part in pair):
        return False
    model["merges"] = [" ".join(pair) for pair in merges]
    model.pop("ignore_merges", None)
    tokenizer_file.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return True


SAMPLE_TEXT = "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # w5 w6\n"
"""Text :func:`check_auto_tokenizer` encodes both ways."""


def declared_tokenizer_class(tokenizer_model_path: str | Path) -> str | None:
    """``tokenizer_class`` of the ``tokenizer_config.json`` beside a ``tokenizer.json``."""
    path = Path(tokenizer_model_path).expanduser()
    config = (path if path.is_dir() else path.parent) / TOKENIZER_CONFIG_FILE
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class")


def check_auto_tokenizer(directory: str | Path) -> None:
    """``AutoTokenizer.from_pretrained(directory)`` must encode as the folder's tokenizer.json.

    transformers 5 picks the tokenizer class from config.json's model type for some models
    (Qwen2: its own ``Qwen2Tokenizer``, which rebuilds a byte-level BPE from the vocabulary):
    a folder whose tokenizer is another kind would load and tokenize wrongly, silently.
    """
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    directory = Path(directory)
    expected = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
    expected = expected.encode(SAMPLE_TEXT, add_special_tokens=False).ids
    loaded = AutoTokenizer.from_pretrained(directory)
    got = loaded.encode(SAMPLE_TEXT, add_special_tokens=False)
    if got != expected:
        raise TokenizerExportError(
            f"AutoTokenizer.from_pretrained({directory}) gives a {type(loaded).__name__} that "
            f"does not encode as its {TOKENIZER_FILE} ({got[:8]} vs {expected[:8]})"
        )


def _export_sentencepiece(model_file: Path, output_dir: Path) -> None:
    try:
        from megatron_dlm.data.hf_tokenizer import export_hf_tokenizer
    except ImportError as exc:
        raise TokenizerExportError(
            f"{model_file} is a sentencepiece model; converting it to tokenizer.json needs "
            "megatron_dlm.data.hf_tokenizer (tools/train_tokenizer.py --hf-output), which this "
            "installation lacks. Pass --tokenizer-model with the tokenizer.json of the same "
            "vocabulary, or --skip-tokenizer"
        ) from exc
    model_type = sentencepiece_model_type(model_file)
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
        written = export_hf_tokenizer(model_file, Path(scratch) / "tokenizer", model_type)
        for name in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE):
            if (Path(written) / name).is_file():
                shutil.move(str(Path(written) / name), output_dir / name)


def sentencepiece_model_type(model_file: Path) -> str:
    """``bpe`` or ``unigram``: the algorithm recorded in a sentencepiece model's trainer spec."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:  # protobuf missing: tools/train_tokenizer.py's default
        return "bpe"
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as exc:
        raise TokenizerExportError(f"{model_file} is not a sentencepiece model ({exc})") from exc
    kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
    if kind not in ("BPE", "UNIGRAM"):
        raise TokenizerExportError(f"{model_file}: {kind} sentencepiece models are not supported")
    return kind.lower()


def _check_vocabulary(
    tokenizer_file: Path,
    vocab_size: int | None,
    special_ids: dict[str, int],
    expected_sha256: str | None = None,
) -> dict[str, str]:
    """Check size, fingerprint and special ids; return the special tokens' strings by role."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:
        raise TokenizerExportError(f"{tokenizer_file} is not a tokenizers JSON ({exc})") from exc
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if vocab_size is not None and size != vocab_size:
        raise TokenizerExportError(
            f"the tokenizer has {size} tokens but the model was trained with {vocab_size}: "
            "pass the tokenizer the checkpoint was trained with (--tokenizer-model)"
        )
    if expected_sha256:
        from megatron_dlm.data.tokenizer import vocab_sha256

        pieces = [tokenizer.id_to_token(i) for i in range(size)]
        if vocab_sha256(pieces) != expected_sha256:
            raise TokenizerExportError(
                f"{tokenizer_file}: the vocabulary differs from the one the model was trained "
                "with (its sha256 fingerprint does not match the checkpoint's): pass the "
                "tokenizer the checkpoint was trained with (--tokenizer-model)"
            )
    tokens = {}
    for role, token_id in special_ids.items():
        token = tokenizer.id_to_token(token_id)
        if token is None:
            raise TokenizerExportError(f"the tokenizer has no token with id {token_id} ({role})")
        tokens[role] = token
    return tokens
