"""Tokenize a corpus into megatron-core indexed datasets for training.

Megatron-LM's tools/preprocess_data.py flags (--input, --json-keys, --output-prefix,
--tokenizer-type, --tokenizer-model, --vocab-file, --merge-file, --vocab-size, --workers,
--append-eod, --log-interval), plus source trees (one file is one document) and the DLM's
special tokens (--mask-token, --eod-token, --pad-token: text or id; a mask or padding token
the tokenizer lacks is appended, and recorded in the .meta.json so that training checks it).
Writes, per JSON key (``text`` for source trees):

    {output-prefix}_{key}_document.bin        token ids (megatron-core IndexedDatasetBuilder)
    {output-prefix}_{key}_document.idx        index
    {output-prefix}_{key}_document.meta.json  tokenizer fingerprint, documents, tokens

Pass ``{output-prefix}_{key}_document`` to training's --data-path, with the same tokenizer
flags. Every document ends with the end-of-document token (<|eod|>, or the tokenizer's
eos_token / <|endoftext|>; --no-append-eod to leave it out). Empty, binary (NUL byte),
non-UTF-8 and unreadable files are skipped and counted. Outputs appear only when complete: a
failure, a full disk or Ctrl-C leaves no partial file and an existing dataset untouched;
partial files that a killed run (SIGKILL) left for the same prefix are removed by the next run,
which says so (never those of a run still writing). The output is the same for any --workers.

Examples:

    # the quickstart corpus: this interpreter's standard library, split by file
    python tools/preprocess_data.py --stdlib --corpus-split train \\
        --tokenizer-model runs/tok/stdlib.model --output-prefix runs/data/stdlib_train
    python tools/preprocess_data.py --stdlib --corpus-split valid \\
        --tokenizer-model runs/tok/stdlib.model --output-prefix runs/data/stdlib_valid

    # a source tree
    python tools/preprocess_data.py --input-dir ~/src/project --include '**/*.py' \\
        --exclude '**/tests' 'build' --tokenizer-model tok.model --output-prefix data/project \\
        --workers 8

    # jsonl, as with Megatron-LM (a Hugging Face tokenizer.json works too)
    python tools/preprocess_data.py --input 'shards/*.jsonl.gz' --json-keys text \\
        --tokenizer-type HuggingFaceTokenizer --tokenizer-model tok/tokenizer.json \\
        --output-prefix data/shards --workers 16

    # a local Hugging Face tokenizer folder (GPT-NeoX, Qwen, StarCoder, ...), MegaDLMs' mask
    python tools/preprocess_data.py --input docs.jsonl --tokenizer-type HuggingFaceTokenizer \
        --tokenizer-model ~/tokenizers/gpt-neox-20b --mask-token 50277 --output-prefix data/neox

    # GPT-2 BPE files, as Megatron-LM takes them
    python tools/preprocess_data.py --input docs.jsonl --tokenizer-type GPT2BPETokenizer \
        --vocab-file gpt2-vocab.json --merge-file gpt2-merges.txt --output-prefix data/gpt2

Exit status: 0 on success, 1 for bad input or tokenizer, or an output that cannot be written
(read-only, below a file, disk full; message on stderr), 2 for bad flags, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from _corpus_args import add_corpus_arguments, check_corpus_arguments, corpus_files, jsonl_paths

from megatron_dlm.data.preprocess import (
    PreprocessError,
    PreprocessOptions,
    preprocess_files,
    preprocess_jsonl,
)
from megatron_dlm.data.tokenizer import TOKENIZER_LIBRARIES, TokenizerError, TokenizerOptions


def get_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_corpus_arguments(parser)
    group = parser.add_argument_group("tokenizer")
    group.add_argument(
        "--tokenizer-type",
        choices=list(TOKENIZER_LIBRARIES),
        default="SentencePieceTokenizer",
        help="SentencePieceTokenizer (a .model file, default), HuggingFaceTokenizer (a local "
        "tokenizer folder or its tokenizer.json), GPT2BPETokenizer (--vocab-file, --merge-file) "
        "or NullTokenizer (--vocab-size; documents are whitespace-separated token ids)",
    )
    group.add_argument(
        "--tokenizer-model",
        metavar="PATH",
        help="tokenizer file or folder (tools/train_tokenizer.py writes one); not for "
        "GPT2BPETokenizer and NullTokenizer",
    )
    group.add_argument("--vocab-file", metavar="PATH", help="GPT-2's vocab.json")
    group.add_argument("--merge-file", metavar="PATH", help="GPT-2's merges.txt")
    group.add_argument(
        "--vocab-size", type=int, help="NullTokenizer: ids 0..N-1 (end of document N)"
    )
    for role, default in (
        ("mask", "the tokenizer's mask_token, else <|mask|>, appended if missing"),
        ("eod", "the tokenizer's eos_token, else <|eod|> or <|endoftext|>"),
        ("pad", "the tokenizer's pad_token if it is not the eod, else <|pad|>, appended if "
                "missing"),
    ):  # fmt: skip
        group.add_argument(
            f"--{role}-token",
            metavar="TOKEN_OR_ID",
            help=f"the {role} token, as text or id (default: {default}); pass the same to "
            "pretrain_dlm.py",
        )
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output-prefix",
        required=True,
        metavar="PREFIX",
        help="outputs are PREFIX_{key}_document.bin/.idx/.meta.json (folders are created)",
    )
    group.add_argument(
        "--append-eod",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="end every document with <|eod|> (default: on)",
    )
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 8),
        help="tokenizer processes; the main process writes (default: CPU cores, at most 8)",
    )
    group.add_argument(
        "--log-interval",
        type=int,
        default=1000,
        help="documents between progress lines when stderr is not a terminal (default: 1000)",
    )
    group.add_argument(
        "--progress-bar",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    args = parser.parse_args(argv)
    check_corpus_arguments(parser, args)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    if args.log_interval < 1:
        parser.error(f"--log-interval must be >= 1, got {args.log_interval}")
    needs_model = args.tokenizer_type not in ("GPT2BPETokenizer", "NullTokenizer")
    if needs_model and not args.tokenizer_model:
        parser.error(f"--tokenizer-type {args.tokenizer_type} needs --tokenizer-model PATH")
    if args.tokenizer_type == "GPT2BPETokenizer":
        missing = [f for f, v in (("--vocab-file", args.vocab_file),
                                  ("--merge-file", args.merge_file)) if not v]  # fmt: skip
        if missing:
            parser.error(f"--tokenizer-type GPT2BPETokenizer needs {' and '.join(missing)}")
    if args.tokenizer_type == "NullTokenizer" and not args.vocab_size:
        parser.error("--tokenizer-type NullTokenizer needs --vocab-size N")
    if args.vocab_size is not None and args.vocab_size < 1:
        parser.error(f"--vocab-size must be >= 1, got {args.vocab_size}")
    return args


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = get_args(argv)
    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("megatron_dlm").setLevel(logging.INFO)
    # SIGTERM (a scheduler stopping the job) cleans up like Ctrl-C.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    options = PreprocessOptions(
        output_prefix=args.output_prefix,
        tokenizer_model=args.tokenizer_model,
        tokenizer_type=args.tokenizer_type,
        tokenizer_options=TokenizerOptions(
            vocab_file=args.vocab_file,
            merge_file=args.merge_file,
            mask_token=args.mask_token,
            eod_token=args.eod_token,
            pad_token=args.pad_token,
            vocab_size=args.vocab_size,
        ),
        workers=args.workers,
        append_eod=args.append_eod,
        log_interval=args.log_interval,
        progress_bar=args.progress_bar,
    )
    try:
        if args.input:
            summary = preprocess_jsonl(jsonl_paths(args), args.json_keys, options)
        else:
            summary = preprocess_files(corpus_files(args), options)
    except (PreprocessError, TokenizerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the output: read-only, below a file, disk full (nothing is left)
        if exc.errno is None:  # our own message, naming the flag
            print(f"error: {exc}", file=sys.stderr)
        else:
            where = f" ({exc.filename})" if exc.filename else ""
            print(
                f"error: --output-prefix {args.output_prefix}: cannot write{where}: "
                f"{exc.strerror}; no output written",
                file=sys.stderr,
            )
        return 1
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    print(summary.format())
    return 0


if __name__ == "__main__":
    status = main()
    # Tearing down megatron-core and torch (imported for IndexedDatasetBuilder) takes ~1 s at
    # interpreter exit; every output is closed, fsynced and renamed by now, so skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)
