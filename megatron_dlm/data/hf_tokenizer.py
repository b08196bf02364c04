"""Export a sentencepiece model (trained by tools/train_tokenizer.py) as a Hugging Face tokenizer.

transformers v5's ``LlamaTokenizer``/``T5Tokenizer`` given a ``.model`` file silently return empty
or ``<unk>`` output, so the export is a ``tokenizers`` JSON wrapped in
``PreTrainedTokenizerFast``: ``tokenizer.json`` + ``tokenizer_config.json``, which
``AutoTokenizer.from_pretrained(folder)`` loads (no ``trust_remote_code``, no sentencepiece).

The JSON reproduces the sentencepiece model exactly, as
:class:`~megatron_dlm.data.encoder.TextEncoder` encodes with it (checked by
:func:`compare_with_sentencepiece` on real files): the pieces spell sentencepiece's whitespace
marker ``▁`` as the space it stands for, so no normaliser is needed (identity normalisation, no
dummy prefix, no pre-tokenizer, as our trainer sets) and a literal ``▁`` in text, which is in no
piece then, falls back to its UTF-8 byte tokens as ``encode_keeping_marker`` encodes it; BPE
merges are every split of a piece into two pieces, ranked by the merged piece's score, which is
the order sentencepiece merges in; byte fallback; the decoder turns byte tokens back into UTF-8.
Special tokens keep their ids and are never matched in text (``split_special_tokens``), as in
sentencepiece where they are control symbols.

A Llama-2-style model (``Llama2Tokenizer``: a dummy prefix, spaces written as "▁" by its
normaliser) converts as Hugging Face's own Llama ``tokenizer.json`` is laid out: the pieces keep
"▁", the normaliser prepends one and turns spaces into it, the decoder undoes both.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from megatron_dlm.data.tokenizer import (
    EOD_TOKEN,
    HF_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    MASK_TOKEN,
    PAD_TOKEN,
    SENTENCEPIECE_SPACE,
    UNK_TOKEN,
)

SPACE = SENTENCEPIECE_SPACE  # "▁"


def sentencepiece_to_tokenizers(model_file: str | os.PathLike, model_type: str = "bpe"):
    """A ``tokenizers.Tokenizer`` that encodes and decodes like the sentencepiece model.

    Args:
        model_file: a ``.model`` trained with tools/train_tokenizer.py's settings.
        model_type: ``bpe`` or ``unigram`` (how it was trained).
    """
    import sentencepiece
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers

    sp = sentencepiece.SentencePieceProcessor(model_file=os.fspath(model_file))
    n = sp.get_piece_size()
    dummy_prefix = _dummy_prefix(model_file)
    # sentencepiece never keeps a space in a piece (it writes spaces as the marker), so this
    # renaming is one to one; the fingerprint counts a space as the marker (vocab_sha256).
    # A dummy-prefix model keeps the marker: its normaliser writes spaces as it.
    pieces = [sp.id_to_piece(i) if dummy_prefix else sp.id_to_piece(i).replace(SPACE, " ")
              for i in range(n)]  # fmt: skip
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    normal = [
        not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))
        for i in range(n)
    ]
    if model_type == "bpe":
        vocab = {piece: i for i, piece in enumerate(pieces)}
        ranked = []
        for i, piece in enumerate(pieces):
            if not normal[i] or len(piece) < 2:
                continue
            for cut in range(1, len(piece)):
                left, right = vocab.get(piece[:cut]), vocab.get(piece[cut:])
                if left is not None and right is not None and normal[left] and normal[right]:
                    ranked.append((-sp.get_score(i), i, cut, pieces[left], pieces[right]))
        ranked.sort()
        model = models.BPE(
            vocab=vocab,
            merges=[(a, b) for *_, a, b in ranked],
            unk_token=UNK_TOKEN,
            byte_fallback=True,
            fuse_unk=True,
        )
    elif model_type == "unigram":
        floor = min(sp.get_score(i) for i in range(n) if normal[i]) - 100.0
        model = models.Unigram(
            [(p, sp.get_score(i) if normal[i] else floor) for i, p in enumerate(pieces)],
            unk_id=sp.unk_id(),
            byte_fallback=True,
        )
    else:
        raise ValueError(f"model_type must be bpe or unigram, got {model_type!r}")
    tokenizer = Tokenizer(model)
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    if dummy_prefix:
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)]
        )
        tokenizer.decoder = decoders.Sequence([
            decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ])  # fmt: skip
    tokenizer.add_special_tokens(
        [AddedToken(pieces[i], special=True, normalized=False) for i in special]
    )
    return tokenizer


def _dummy_prefix(model_file: str | os.PathLike) -> bool:
    """Whether the model writes a "▁" before the text (``add_dummy_prefix``: Llama-2's models;
    tools/train_tokenizer.py's do not).

    Raises:
        ValueError: a dummy-prefix model whose normaliser also rewrites or squeezes text, which
            has no exact ``tokenizers`` equivalent here.
    """
    proto = _model_proto(model_file)
    if proto is None:  # protobuf missing: tools/train_tokenizer.py's models
        return False
    spec = proto.normalizer_spec
    if not spec.add_dummy_prefix:
        return False
    if spec.remove_extra_whitespaces or spec.name not in ("identity", ""):
        raise ValueError(
            f"{model_file}: its normaliser ({spec.name or 'custom'}, remove_extra_whitespaces="
            f"{spec.remove_extra_whitespaces}) has no exact Hugging Face conversion here; use "
            f"the model's own tokenizer.json (--tokenizer-type HuggingFaceTokenizer)"
        )
    return True


def check_hf_output(output_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Refuse an output folder that holds anything (unless ``overwrite``) or is a file.

    Raises:
        FileExistsError: naming the folder (the caller's ``--hf-output``).
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(
            f"--hf-output {output_dir} is a file, not a folder: choose a new folder"
        )
    if not overwrite and output_dir.is_dir() and any(output_dir.iterdir()):
        raise FileExistsError(
            f"--hf-output {output_dir} already exists and is not empty: choose a new folder, "
            "or pass --overwrite to replace its tokenizer files (other files are left alone)"
        )


def export_hf_tokenizer(
    model_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_type: str = "bpe",
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``tokenizer.json`` + ``tokenizer_config.json`` for ``AutoTokenizer``.

    The files are written into a temporary folder next to ``output_dir`` and then moved into
    it one by one (each appears complete). Nothing else in ``output_dir`` is touched: with
    ``overwrite`` only the files this function writes are replaced.

    Args:
        model_file: the sentencepiece ``.model``.
        output_dir: a new or empty folder (or, with ``overwrite``, one to put the files in).
        model_type: ``bpe`` or ``unigram`` (how it was trained).
        overwrite: replace the tokenizer files of a non-empty folder.

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``output_dir`` is a file, or a non-empty folder without ``overwrite``.
    """
    from transformers import PreTrainedTokenizerFast

    output_dir = Path(output_dir)
    check_hf_output(output_dir, overwrite)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=sentencepiece_to_tokenizers(model_file, model_type),
        unk_token=UNK_TOKEN,
        eos_token=EOD_TOKEN,
        pad_token=PAD_TOKEN,
        mask_token=MASK_TOKEN,
        split_special_tokens=True,
        clean_up_tokenization_spaces=False,
        model_max_length=1 << 30,
    )
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        wrapped.save_pretrained(temp)
        config_path = temp / HF_CONFIG_FILE
        config = json.loads(config_path.read_text(encoding="utf-8"))
        # transformers v5 records its internal "TokenizersBackend"; the public name loads in
        # v4 too.
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")
        if not (temp / HF_TOKENIZER_FILE).is_file():
            raise RuntimeError(f"transformers did not write {HF_TOKENIZER_FILE} into {temp}")
        check_hf_output(output_dir, overwrite)  # again: it may have appeared meanwhile
        output_dir.mkdir(exist_ok=True)
        for written in sorted(temp.iterdir()):
            os.replace(written, output_dir / written.name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)  # only what this call wrote
    return output_dir


def compare_with_sentencepiece(
    model_file: str | os.PathLike, hf_dir: str | os.PathLike, texts: Iterable[str]
) -> list[str]:
    """Encode and decode ``texts`` with both; return a description of each difference.

    The sentencepiece side is what preprocessing and training use
    (:class:`~megatron_dlm.data.encoder.TextEncoder`); the Hugging Face side is loaded the way
    users load it, ``AutoTokenizer.from_pretrained``.
    """
    from transformers import AutoTokenizer

    from megatron_dlm.data.encoder import TextEncoder

    sp = TextEncoder(model_file)
    hf = AutoTokenizer.from_pretrained(os.fspath(hf_dir))
    problems = []
    for k, text in enumerate(texts):
        expected = sp.encode(text)
        got = hf.encode(text, add_special_tokens=False)
        if got != expected:
            at = next((j for j, (a, b) in enumerate(zip(got, expected)) if a != b), None)
            at = min(len(got), len(expected)) if at is None else at
            problems.append(f"text {k}: ids differ from token {at} ({text[:40]!r}...)")
        elif hf.decode(got, skip_special_tokens=True) != text:
            problems.append(f"text {k}: decoding does not give the text back")
    return problems


def write_tokenizer_config(
    source_config: Path | None,
    output: Path,
    roles: dict[str, str],
    added: dict[int, str],
    extra: dict | None = None,
) -> None:
    """Write ``output/tokenizer_config.json``: ``source_config``'s (or a
    ``PreTrainedTokenizerFast`` one) with the roles named and the appended tokens listed.

    Args:
        source_config: the tokenizer's own ``tokenizer_config.json``, if any.
        output: the folder.
        roles: ``{"mask_token": ..., "eos_token": ..., "pad_token": ...}``.
        added: id -> token appended to the vocabulary.
        extra: keys to set (GPT-2 BPE: ``split_special_tokens``).
    """
    if source_config is not None and source_config.is_file():
        config = json.loads(source_config.read_text(encoding="utf-8"))
    else:
        config = {"tokenizer_class": "PreTrainedTokenizerFast",
                  "clean_up_tokenization_spaces": False}  # fmt: skip
    config.update(roles)
    config.update(extra or {})
    if added and "added_tokens_decoder" in config:
        for token_id, token in added.items():
            config["added_tokens_decoder"][str(token_id)] = {
                "content": token, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False, "special": True,
            }  # fmt: skip
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (output / HF_CONFIG_FILE).write_text(text, encoding="utf-8")
    special_map = (
        None if source_config is None else source_config.parent / "special_tokens_map.json"
    )
    if special_map is not None and special_map.is_file():  # older folders name the roles here
        values = json.loads(special_map.read_text(encoding="utf-8"))
        values.update(roles)
        text = json.dumps(values, indent=2, ensure_ascii=False) + "\n"
        (output / special_map.name).write_text(text, encoding="utf-8")


def write_recorded_tokenizer(
    record, output: str | os.PathLike, tokenizer_model: str | os.PathLike | None = None
) -> Path:
    """Write the Hugging Face tokenizer a tokenizer record describes into a new folder
    ``output``: ``tokenizer.json`` with the tokens the run appended, and a
    ``tokenizer_config.json`` naming the roles, so that ``AutoTokenizer`` gives the run's ids.

    For ``HuggingFaceTokenizer`` and ``GPT2BPETokenizer`` records (GPT-2's files become a
    ``tokenizer.json`` that, like Megatron-LM, encodes special-token text as text), and
    ``Llama2Tokenizer`` ones (the sentencepiece model converted by
    :func:`sentencepiece_to_tokenizers`, the appended tokens after it; checked to encode as the
    model does).

    Args:
        record: a :class:`~megatron_dlm.checkpoint.TokenizerRecord`.
        output: the folder to create.
        tokenizer_model: the tokenizer's folder or file instead of the recorded one.

    Raises:
        TokenizerError: the files are missing or give other ids than the record's.
    """
    from megatron_dlm.checkpoint.tokenizer_record import TokenizerRecord
    from megatron_dlm.data.encoder import TextEncoder
    from megatron_dlm.data.tokenizer import (
        TokenizerError,
        TokenizerOptions,
        record_mismatch_error,
    )

    path = tokenizer_model or (None if record.type == "GPT2BPETokenizer" else record.model)
    try:
        encoder = TextEncoder(path, record.type, TokenizerOptions.from_record(record))
    except TokenizerError as exc:
        if tokenizer_model is None:
            raise
        raise record_mismatch_error(exc, record, "--tokenizer-model", path) from exc
    differences = TokenizerRecord.from_tokenizer(encoder).differences(record)
    if differences:
        raise TokenizerError(
            f"tokenizer {path or record.model}: does not match the checkpoint's: "
            + "; ".join(f"{n}: checkpoint {t!r}, now {m!r}" for n, m, t in differences)
        )
    output = Path(output)
    output.mkdir(parents=True)
    sentencepiece = encoder.files.library == "sentencepiece"
    if sentencepiece:
        _write_converted_sentencepiece(encoder, output / HF_TOKENIZER_FILE)
    else:
        encoder.save_tokenizers_json(output / HF_TOKENIZER_FILE)
    gpt2 = record.type == "GPT2BPETokenizer"
    source_config = None if gpt2 or sentencepiece else encoder.files.load_path / HF_CONFIG_FILE
    added = {encoder.original_vocab_size + k: t for k, t in enumerate(encoder.added_tokens)}
    extra = {"split_special_tokens": True, "add_prefix_space": False} if gpt2 else None
    if sentencepiece:  # control symbols are never matched in text
        extra = {"split_special_tokens": True, "model_max_length": 1 << 30}
    write_tokenizer_config(source_config, output, encoder.special_tokens, added, extra)
    return output


def _write_converted_sentencepiece(encoder, path: Path) -> None:
    """``tokenizer.json`` of a sentencepiece encoder: the model converted, its appended tokens
    after it; refused unless it encodes the check text as the model does."""
    from tokenizers import AddedToken

    from megatron_dlm.data.tokenizer import CHECK_TEXT, TokenizerError

    model_file = encoder.files.model_file
    try:
        model_type = "unigram" if _is_unigram(model_file) else "bpe"
        tokenizer = sentencepiece_to_tokenizers(model_file, model_type)
    except ValueError as exc:
        raise TokenizerError(str(exc)) from exc
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in encoder.added_tokens]
    )
    tokenizer.encode_special_tokens = True
    got = tokenizer.encode(CHECK_TEXT, add_special_tokens=False).ids
    expected = encoder.encode(CHECK_TEXT)
    if got != expected:
        raise TokenizerError(
            f"{model_file}: its Hugging Face conversion encodes differently ({got[:8]} vs "
            f"{expected[:8]}); use the model's own tokenizer.json (--tokenizer-type "
            f"HuggingFaceTokenizer)"
        )
    tokenizer.save(os.fspath(path))


def _model_proto(model_file: str | os.PathLike):
    """The sentencepiece ``ModelProto`` of ``model_file``; None without protobuf."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError:
        return None
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(model_file).read_bytes())
    return proto


def _is_unigram(model_file: str | os.PathLike) -> bool:
    proto = _model_proto(model_file)
    return proto is not None and proto.trainer_spec.model_type == proto.trainer_spec.UNIGRAM
