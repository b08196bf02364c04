"""Corpus selection flags shared by tools/train_tokenizer.py and tools/preprocess_data.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from megatron_dlm.data.corpus import (
    DEFAULT_INCLUDE,
    SourceFile,
    collect_corpus,
    expand_input_paths,
)


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the input flags: jsonl (--input/--json-keys) or source trees (--input-dir, --stdlib)."""
    group = parser.add_argument_group(
        "input", "jsonl files (--input) or source trees (--input-dir and/or --stdlib)"
    )
    group.add_argument(
        "--input",
        nargs="+",
        metavar="FILE_OR_GLOB",
        help="jsonl files, one JSON object per line (.gz read transparently); globs are "
        "expanded in sorted order ('data/*.jsonl', 'data/**/*.jsonl.gz')",
    )
    group.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="JSON keys to read from each --input record (default: text)",
    )
    group.add_argument(
        "--input-dir",
        nargs="+",
        default=[],
        metavar="DIR",
        help="directories of source files; one file is one document, in sorted path order",
    )
    group.add_argument(
        "--include",
        nargs="+",
        default=list(DEFAULT_INCLUDE),
        metavar="GLOB",
        help="files of --input-dir to take, as globs relative to it (default: '**/*.py')",
    )
    group.add_argument(
        "--exclude",
        nargs="+",
        default=[],
        metavar="GLOB",
        help="files or directories of --input-dir to leave out ('**/tests', 'vendor/**')",
    )
    group.add_argument(
        "--stdlib",
        action="store_true",
        help="add this interpreter's standard library .py files, without test suites, "
        "idlelib, lib2to3 and site-packages (~600 files, 11 MB on CPython 3.11)",
    )
    group.add_argument(
        "--stdlib-with-tests",
        action="store_true",
        help="as --stdlib, keeping the test suites (~1,800 files, 31.5 MB)",
    )
    group.add_argument(
        "--corpus-split",
        choices=["all", "train", "valid"],
        default="all",
        help="for source trees: take all files, or the train or valid part of a split by file "
        "(stable hash of the relative path; disjoint, the same on every machine)",
    )
    group.add_argument(
        "--valid-fraction",
        type=float,
        default=0.05,
        help="share of files in the valid part of --corpus-split (default: 0.05)",
    )


def check_corpus_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exactly one kind of input; errors name the flags (argparse exits with status 2)."""
    trees = args.input_dir or args.stdlib or args.stdlib_with_tests
    if not args.input and not trees:
        parser.error("give the input: --input FILE.jsonl, or --input-dir DIR and/or --stdlib")
    if args.input and trees:
        parser.error("--input (jsonl) cannot be combined with --input-dir/--stdlib")
    if args.input and args.corpus_split != "all":
        parser.error("--corpus-split applies to source trees (--input-dir/--stdlib), not --input")
    if not 0.0 <= args.valid_fraction <= 1.0:
        parser.error(f"--valid-fraction must lie in [0, 1], got {args.valid_fraction}")


def corpus_files(args: argparse.Namespace) -> list[SourceFile]:
    """The source files selected by the flags (raises FileNotFoundError for a missing dir)."""
    return collect_corpus(
        input_dirs=args.input_dir,
        include=args.include,
        exclude=args.exclude,
        stdlib=args.stdlib,
        stdlib_with_tests=args.stdlib_with_tests,
        split=args.corpus_split,
        valid_fraction=args.valid_fraction,
    )


def jsonl_paths(args: argparse.Namespace) -> list[Path]:
    """The jsonl files named by --input (raises FileNotFoundError naming a missing one)."""
    return expand_input_paths(args.input)
