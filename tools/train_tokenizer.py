"""Train a sentencepiece tokenizer for code, with the special tokens a DLM needs.

Trains a BPE (default) or unigram sentencepiece model on source files (one file is one
document) or jsonl records, with the settings that suit code (whole files as sentences,
identity normalisation, whitespace kept, byte fallback; see megatron_dlm/data/
tokenizer_training.py), and reserves <|mask|>, <|eod|>, <|pad|>. A held-out sample of the
documents is left out of training and reports bytes per token. --hf-output also writes a
Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) and checks, on the held-out
documents, that AutoTokenizer.from_pretrained(DIR) encodes exactly like the sentencepiece model
and decodes back to the text.

Writes PREFIX.model (pass it to --tokenizer-model) and PREFIX.vocab (pieces and scores).

Examples:

    # the quickstart tokenizer: the train part of this interpreter's standard library
    python tools/train_tokenizer.py --stdlib --corpus-split train --vocab-size 8192 \\
        --output-prefix runs/tok/stdlib --hf-output runs/tok/stdlib_hf

    # a source tree, 32k BPE
    python tools/train_tokenizer.py --input-dir ~/src/project --include '**/*.py' \\
        --exclude '**/tests' --output-prefix tok/project32k

    # jsonl records
    python tools/train_tokenizer.py --input 'shards/*.jsonl.gz' --json-keys text \\
        --vocab-size 32000 --output-prefix tok/shards

Memory: sentencepiece holds the training text and needs ~40x its size while training BPE;
--max-train-bytes caps the text (default 256 MB).

--hf-output never replaces a non-empty folder or a file (pass --overwrite to replace the two
tokenizer files of an existing folder; nothing else in it is touched), and both outputs are
checked for writability before any text is read.

Exit status: 0 on success, 1 for bad input, a failed check or an output that cannot be written
(disk full), 2 for bad flags (including an output that cannot be created).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator

from _corpus_args import add_corpus_arguments, check_corpus_arguments, corpus_files, jsonl_paths

from megatron_dlm.data.corpus import iter_jsonl_texts, split_fraction
from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.hf_tokenizer import check_hf_output
from megatron_dlm.data.paths import check_output_dir, check_output_file
from megatron_dlm.data.tokenizer import TokenizerError
from megatron_dlm.data.tokenizer_training import (
    SentencePieceOptions,
    bytes_per_token,
    train_sentencepiece,
)

HELD_OUT_SALT = "megatron-dlm-tokenizer-held-out"
# Strings every export must get right besides the held-out documents.
EDGE_CASES = [
    "",
    " ",
    "  leading spaces and trailing  ",
    "\tif x:\r\n\t\treturn '\u00e9\u00e8 \u4e2d\u6587 \U0001f600'\n\n",
    "literal specials: <|mask|> <|eod|> <|pad|> <unk> <s> </s>\n",
    "bytes: \x00\x01\x0c \u2028 \ufeff\n",
    "sentencepiece's space marker: '\u2581\u2583\u2585' a\u2581b \u2581\u2581 \u2581",
]


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_corpus_arguments(parser)
    group = parser.add_argument_group("tokenizer")
    group.add_argument(
        "--output-prefix",
        required=True,
        metavar="PREFIX",
        help="writes PREFIX.model and PREFIX.vocab (folders are created)",
    )
    group.add_argument("--vocab-size", type=int, default=32000, help="default: 32000")
    group.add_argument("--model-type", choices=["bpe", "unigram"], default="bpe")
    group.add_argument(
        "--character-coverage",
        type=float,
        default=0.9995,
        help="share of characters with their own piece; the rest become byte tokens "
        "(default: 0.9995)",
    )
    group.add_argument(
        "--max-piece-length", type=int, default=16, help="longest piece in characters"
    )
    group.add_argument(
        "--max-train-bytes",
        type=float,
        default=256e6,
        help="stop reading training text after this many bytes (default: 256e6)",
    )
    group.add_argument(
        "--held-out-fraction",
        type=float,
        default=0.05,
        help="share of documents (by a stable hash of their path or line) left out of "
        "training to measure bytes per token (default: 0.05)",
    )
    group.add_argument(
        "--hf-output",
        metavar="DIR",
        help="also write a Hugging Face tokenizer (tokenizer.json, tokenizer_config.json) "
        "and check it against the sentencepiece model; DIR must be new or empty",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="let --hf-output name a non-empty folder: its tokenizer.json and "
        "tokenizer_config.json are replaced, nothing else in it is touched",
    )
    group.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="training threads")
    args = parser.parse_args(argv)
    check_corpus_arguments(parser, args)
    if not 0.0 <= args.held_out_fraction < 1.0:
        parser.error(f"--held-out-fraction must lie in [0, 1), got {args.held_out_fraction}")
    if args.max_train_bytes <= 0:
        parser.error("--max-train-bytes must be > 0")
    # Outputs are checked before reading and training, which may take a long time.
    try:
        check_output_file(f"{args.output_prefix}.model", "--output-prefix")
        if args.hf_output:
            check_hf_output(args.hf_output, args.overwrite)
            check_output_dir(args.hf_output, "--hf-output")
    except OSError as exc:
        parser.error(str(exc))
    return args


def documents(args: argparse.Namespace, skipped: Counter) -> Iterator[tuple[str, str]]:
    """(stable key, text) of each input document; unusable files are counted in ``skipped``."""
    if args.input:
        for path in jsonl_paths(args):
            for k, key in enumerate(args.json_keys):
                for line, text in enumerate(iter_jsonl_texts([path], key)):
                    yield f"{path}:{k}:{line}", text
        return
    for f in corpus_files(args):
        try:
            data = f.path.read_bytes()
        except OSError:
            skipped["unreadable"] += 1
            continue
        if not data or b"\x00" in data:
            skipped["empty" if not data else "binary"] += 1
            continue
        try:
            yield f.relpath, data.decode("utf-8")
        except UnicodeDecodeError:
            skipped["undecodable"] += 1


def describe(exc: OSError) -> str:
    """``reason`` or ``path: reason`` of an OS error, without the errno."""
    if exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    start = time.perf_counter()
    skipped: Counter = Counter()
    train, held_out = [], []
    train_bytes = 0
    try:
        for key, text in documents(args, skipped):
            if split_fraction(key, HELD_OUT_SALT) < args.held_out_fraction:
                held_out.append(text)
            elif train_bytes < args.max_train_bytes:
                train.append(text)
                train_bytes += len(text.encode("utf-8"))
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not train:
        print(
            "error: no training text: the input is empty or every file was skipped "
            f"({dict(skipped)})",
            file=sys.stderr,
        )
        return 1
    read_s = time.perf_counter() - start
    options = SentencePieceOptions(
        vocab_size=args.vocab_size,
        model_type=args.model_type,
        character_coverage=args.character_coverage,
        max_piece_length=args.max_piece_length,
        num_threads=args.threads,
    )
    try:
        model = train_sentencepiece(train, args.output_prefix, options)
        encoder = TextEncoder(model)
    except (ValueError, TokenizerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # disk full, the folder became read-only
        print(f"error: cannot write {args.output_prefix}.model: {describe(exc)}", file=sys.stderr)
        return 1
    train_s = time.perf_counter() - start - read_s
    lines = [
        f"wrote {model} (+ .vocab): {options.model_type}, vocab {encoder.vocab_size}, "
        f"special ids mask={encoder.mask_id} eod={encoder.eod} pad={encoder.pad}",
        f"trained on {len(train):,} documents, {train_bytes / 1e6:,.1f} MB in {train_s:.1f} s "
        f"(reading {read_s:.1f} s); skipped {sum(skipped.values())}"
        + (f" ({', '.join(f'{r} {n}' for r, n in sorted(skipped.items()))})" if skipped else ""),
    ]
    if held_out:
        bpt = bytes_per_token(encoder.encode, held_out)
        held_bytes = sum(len(t.encode("utf-8")) for t in held_out)
        lines.append(
            f"held out: {len(held_out):,} documents, {held_bytes / 1e6:,.2f} MB: "
            f"{bpt:.3f} bytes/token"
        )
    else:
        bpt = bytes_per_token(encoder.encode, train)
        lines.append(f"no held-out documents; on the training text: {bpt:.3f} bytes/token")
    if args.hf_output:
        from megatron_dlm.data.hf_tokenizer import compare_with_sentencepiece, export_hf_tokenizer

        try:
            out = export_hf_tokenizer(
                model, args.hf_output, options.model_type, overwrite=args.overwrite
            )
        except OSError as exc:
            print("\n".join(lines), file=sys.stderr)
            print(f"error: --hf-output {args.hf_output}: {describe(exc)}", file=sys.stderr)
            return 1
        checks = held_out or train[:64]
        problems = compare_with_sentencepiece(model, out, itertools.chain(checks, EDGE_CASES))
        if problems:
            print("\n".join(lines), file=sys.stderr)
            print(
                f"error: the Hugging Face export {out} differs from {model}:\n  "
                + "\n  ".join(problems[:10]),
                file=sys.stderr,
            )
            return 1
        lines.append(
            f"wrote {out}/ (tokenizer.json, tokenizer_config.json): AutoTokenizer encodes "
            f"{len(checks) + len(EDGE_CASES)} checked texts exactly like the .model"
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
