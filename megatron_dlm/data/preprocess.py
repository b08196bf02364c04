"""Tokenize a corpus into megatron-core indexed datasets (``.bin``/``.idx``) plus metadata.

The engine behind tools/preprocess_data.py (see its ``--help``):

    from megatron_dlm.data.corpus import stdlib_files
    from megatron_dlm.data.preprocess import PreprocessOptions, preprocess_files
    summary = preprocess_files(stdlib_files(), PreprocessOptions(
        output_prefix="data/stdlib", tokenizer_model="tok/stdlib.model", workers=2))
    print(summary.format())           # -> data/stdlib_text_document.{bin,idx,meta.json}

How it runs:

- Worker processes read, decode and tokenize documents with
  :class:`~megatron_dlm.data.encoder.TextEncoder` (sentencepiece or tokenizers directly: no torch,
  no megatron-core), and return numpy arrays. ``imap`` keeps input order, so the output does
  not depend on the number of workers.
- The main process writes with megatron-core's ``IndexedDatasetBuilder``, imported without
  megatron-core's package ``__init__`` (~1 s with torch instead of ~4.5 s; see
  :func:`~megatron_dlm.data.indexed.indexed_dataset_module`), and while the workers already
  tokenize. Input in flight is capped (``max_inflight_bytes``) so a large corpus never piles up
  in memory.
- Outputs are written under temporary names (``{prefix}.partial-{pid}@{host}.*``) and renamed
  when all are complete: a failure, a full disk or Ctrl-C leaves no partial file and an existing
  dataset untouched. Partial files of a run that was killed (SIGKILL) are removed by the next
  run for the same prefix on that host, which says so; those of a live process never are.
- Files that are empty, binary (a NUL byte), not UTF-8 or unreadable are skipped and counted;
  so are JSON records whose key is missing, not a string, or empty. Text is kept byte for byte
  (no newline translation).
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from megatron_dlm.data.corpus import SourceFile, open_text
from megatron_dlm.data.encoder import TextEncoder
from megatron_dlm.data.indexed import indexed_dataset_module, optimal_token_dtype
from megatron_dlm.data.metadata import (
    DatasetMetadata,
    tokenizer_fingerprint,
    write_dataset_metadata,
)
from megatron_dlm.data.paths import check_output_dir
from megatron_dlm.data.tokenizer import TokenizerOptions

logger = logging.getLogger(__name__)

SKIP_REASONS = ("empty", "binary", "undecodable", "unreadable", "missing_key", "not_text")
"""Why an input was not written: a zero-byte file or empty text; a NUL byte; not UTF-8; an
OS error while reading; a JSON record without the key; a JSON value that is not a string."""


class PreprocessError(RuntimeError):
    """Input that cannot be preprocessed (no documents, invalid JSON, ...); nothing written."""


@dataclass
class PreprocessOptions:
    """How to preprocess (the flags of tools/preprocess_data.py).

    Attributes:
        output_prefix: outputs are ``{output_prefix}_{key}_document.{bin,idx,meta.json}``.
        tokenizer_model: sentencepiece ``.model``, or a Hugging Face tokenizer folder or its
            ``tokenizer.json`` (None for GPT2BPETokenizer and NullTokenizer).
        tokenizer_type: ``SentencePieceTokenizer``, ``HuggingFaceTokenizer``,
            ``GPT2BPETokenizer`` or ``NullTokenizer``.
        tokenizer_options: GPT-2's files, the special tokens, --vocab-size
            (:class:`~megatron_dlm.data.tokenizer.TokenizerOptions`).
        workers: tokenizer processes (the main process writes).
        append_eod: append ``<|eod|>`` to every document.
        log_interval: documents between progress lines (when no progress bar is shown).
        progress_bar: show a tqdm bar (None: when stderr is a terminal).
        max_inflight_bytes: cap on input sent to workers but not yet written.
    """

    output_prefix: str
    tokenizer_model: str | None
    tokenizer_type: str = "SentencePieceTokenizer"
    tokenizer_options: TokenizerOptions = field(default_factory=TokenizerOptions)
    workers: int = 1
    append_eod: bool = True
    log_interval: int = 1000
    progress_bar: bool | None = None
    max_inflight_bytes: int = 256 << 20


@dataclass
class PreprocessSummary:
    """What a preprocessing run did."""

    documents: dict[str, int]
    tokens: dict[str, int]
    input_bytes: int
    output_bytes: int
    seconds: float
    builder_ready_seconds: float = 0.0
    skipped: Counter = field(default_factory=Counter)
    skipped_examples: dict[str, list[str]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def total_documents(self) -> int:
        return sum(self.documents.values())

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens.values())

    def format(self) -> str:
        """A few human-readable lines."""
        secs = max(self.seconds, 1e-9)
        lines = [
            f"documents: {self.total_documents:,}  tokens: {self.total_tokens:,}  "
            f"input: {self.input_bytes / 1e6:,.1f} MB  output: {self.output_bytes / 1e6:,.1f} MB"
            f"  bytes/token: {self.input_bytes / max(self.total_tokens, 1):.2f}",
            f"time: {self.seconds:.2f} s  ({self.total_documents / secs:,.0f} docs/s, "
            f"{self.total_tokens / secs / 1e6:,.2f}M tokens/s, "
            f"{self.input_bytes / secs / 1e6:,.1f} MB/s); megatron-core's builder was ready "
            f"after {self.builder_ready_seconds:.1f} s, while workers tokenized",
        ]
        if self.skipped:
            reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
            lines.append(f"skipped: {sum(self.skipped.values())} ({reasons})")
            for reason, examples in sorted(self.skipped_examples.items()):
                lines.append(f"  {reason}: {', '.join(examples)}")
        else:
            lines.append("skipped: 0")
        for prefix in self.outputs:
            lines.append(f"wrote {prefix}.bin, .idx, .meta.json")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Worker side: one TextEncoder per process.

_worker: dict[str, Any] = {}


def _init_worker(
    model: str | None,
    tokenizer_type: str,
    tokenizer_options: TokenizerOptions,
    append_eod: bool,
    keys: Sequence[str],
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C ...
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # ... and stops workers with SIGTERM
    encoder = TextEncoder(model, tokenizer_type, tokenizer_options)
    _worker.update(
        encode=encoder.encode,
        eod=encoder.eod if append_eod else None,
        dtype=optimal_token_dtype(encoder.vocab_size),
        keys=tuple(keys),
    )


def _tokens(text: str) -> np.ndarray:
    ids = _worker["encode"](text)
    if _worker["eod"] is not None:
        ids.append(_worker["eod"])
    return np.array(ids, dtype=_worker["dtype"])


def _encode_file(path: str) -> tuple[str | None, np.ndarray | None, int]:
    """(skip reason or None, tokens, bytes read) for one source file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return "unreadable", None, 0
    if not data:
        return "empty", None, 0
    if b"\x00" in data:
        return "binary", None, len(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "undecodable", None, len(data)
    return None, _tokens(text), len(data)


def _encode_json_line(item: tuple[int, int, str]) -> tuple[list, int, str | None]:
    """([(skip reason or None, tokens) per key], bytes, error) for one JSON line."""
    _, _, line = item
    try:
        record = json.loads(line)
    except ValueError as exc:
        return [], len(line), f"not valid JSON ({exc})"
    if not isinstance(record, dict):
        return [], len(line), "not a JSON object"
    out = []
    for key in _worker["keys"]:
        text = record.get(key)
        if key not in record:
            out.append(("missing_key", None))
        elif not isinstance(text, str):
            out.append(("not_text", None))
        elif not text:
            out.append(("empty", None))
        else:
            out.append((None, _tokens(text)))
    return out, len(line.encode("utf-8")), None


# ---------------------------------------------------------------------------------------------
# Main process.


class _InflightLimit:
    """Blocks the feeder once ``budget`` bytes are sent to workers but not yet written."""

    def __init__(self, budget: int):
        self.budget, self.inflight, self.closed = budget, 0, False
        self.cond = threading.Condition()

    def acquire(self, n: int) -> bool:
        with self.cond:
            while not self.closed and self.inflight and self.inflight + n > self.budget:
                self.cond.wait()
            self.inflight += n
            return not self.closed

    def release(self, n: int) -> None:
        with self.cond:
            self.inflight -= n
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class _Progress:
    """A tqdm bar on a terminal, otherwise a log line every ``interval`` documents."""

    def __init__(self, total: int | None, interval: int, bar: bool | None, start: float):
        self.start = start
        self.docs = self.tokens = self.bytes = 0
        self.interval = max(interval, 1)
        self.bar = None
        if bar is None:
            bar = sys.stderr.isatty()
        if bar:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is a dependency; degrade to log lines without it
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, unit="doc", dynamic_ncols=True)

    def update(self, docs: int, tokens: int, nbytes: int) -> None:
        """One input done: ``docs`` documents written (0 if skipped) with ``tokens`` tokens."""
        self.docs += docs
        self.tokens += tokens
        self.bytes += nbytes
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 16 == 0:
                self.bar.set_postfix_str(f"{self.tokens / elapsed / 1e6:.2f}M tok/s", refresh=False)
        elif docs and self.docs % self.interval == 0:
            logger.info(
                "processed %d documents (%.0f docs/s, %.2fM tokens/s, %.1f MB/s)",
                self.docs,
                self.docs / elapsed,
                self.tokens / elapsed / 1e6,
                self.bytes / elapsed / 1e6,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def dataset_prefix(output_prefix: str, key: str) -> str:
    """``{output_prefix}_{key}_document``: the prefix training's ``--data-path`` takes."""
    return f"{output_prefix}_{key}_document"


PARTIAL_SUFFIXES = (".bin", ".idx", ".meta.json")


def partial_name(final: str, pid: int | None = None, host: str | None = None) -> str:
    """Temporary prefix of output ``final`` while a run writes it: ``final.partial-PID@HOST``
    (the host keeps a run on another machine of a shared filesystem from looking dead)."""
    pid = os.getpid() if pid is None else pid
    host = socket.gethostname() if host is None else host
    return f"{final}.partial-{pid}@{host}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_partials(final: str) -> tuple[list[str], list[str]]:
    """Delete partial files of ``final`` left by runs on this host that are gone (SIGKILL,
    power loss); keep those of live processes and of other hosts.

    Returns:
        (removed files, files kept because their writer may still run).
    """
    directory, name = os.path.split(os.path.abspath(final))
    suffixes = "|".join(map(re.escape, PARTIAL_SUFFIXES))
    pattern = re.compile(re.escape(name) + r"\.partial-(\d+)(?:@(.+?))?(?:" + suffixes + ")")
    removed, kept = [], []
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return removed, kept
    host = socket.gethostname()
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match is None:
            continue
        path = os.path.join(directory, entry)
        pid, writer_host = int(match.group(1)), match.group(2)
        local = writer_host in (None, host)  # None: the name before the host was added
        if not local or pid == os.getpid() or _process_alive(pid):
            kept.append(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        removed.append(path)
    return removed, kept


class _Outputs:
    """Builders writing under temporary names; ``commit`` renames, ``discard`` deletes."""

    def __init__(self, output_prefix: str, keys: Sequence[str], vocab_size: int):
        self.finals = [dataset_prefix(output_prefix, key) for key in keys]
        self.temps = [partial_name(p) for p in self.finals]
        for final in self.finals:
            removed, kept = remove_stale_partials(final)
            if removed:
                logger.warning(
                    "removed %d partial file(s) of %s left by a run that was killed: %s",
                    len(removed),
                    final,
                    ", ".join(os.path.basename(p) for p in removed),
                )
            if kept:
                logger.warning(
                    "%s: partial files of another run that may still be writing it are left "
                    "alone: %s",
                    final,
                    ", ".join(os.path.basename(p) for p in kept),
                )
        self.vocab_size = vocab_size
        self.builders: list | None = None

    def open(self) -> None:
        """Create the builders (imports megatron-core's indexed_dataset: ~1 s)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(Transformer Engine|Apex).*")
            indexed_dataset = indexed_dataset_module()
        dtype = indexed_dataset.DType.optimal_dtype(self.vocab_size)
        self.builders = [
            indexed_dataset.IndexedDatasetBuilder(temp + ".bin", dtype=dtype) for temp in self.temps
        ]

    def finalize(self) -> None:
        for builder, temp in zip(self.builders, self.temps):
            builder.finalize(temp + ".idx")
            for suffix in (".bin", ".idx"):
                with open(temp + suffix, "rb") as f:
                    os.fsync(f.fileno())

    def write_metadata(
        self, k: int, documents: int, tokens: int, eod: bool, tokenizer: dict, source: dict
    ) -> None:
        """The ``.meta.json`` sidecar of output ``k`` (after :meth:`finalize`)."""
        temp = self.temps[k]
        metadata = DatasetMetadata(
            documents=documents,
            tokens=tokens,
            dtype=np.dtype(self.builders[k].dtype).name,
            eod_appended=eod,
            bin_bytes=os.path.getsize(temp + ".bin"),
            idx_bytes=os.path.getsize(temp + ".idx"),
            tokenizer=tokenizer,
            source=source,
        )
        write_dataset_metadata(temp + ".meta.json", metadata)

    def commit(self) -> None:
        for temp, final in zip(self.temps, self.finals):
            for suffix in PARTIAL_SUFFIXES:
                os.replace(temp + suffix, final + suffix)

    def discard(self) -> None:
        if self.builders is not None:
            for builder in self.builders:
                if not builder.data_file.closed:
                    # Closing flushes the buffer, which fails again on a full disk.
                    with contextlib.suppress(OSError):
                        builder.data_file.close()
        for temp in self.temps:
            for suffix in PARTIAL_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp + suffix)


def _run(
    options: PreprocessOptions,
    keys: Sequence[str],
    worker_fn: Callable,
    items: Iterable[tuple[Any, Any, int]],
    total: int | None,
    sources: dict[str, Any],
    describe: Callable[[Any], str],
) -> PreprocessSummary:
    """Tokenize ``items`` — (task for ``worker_fn``, reference for messages, size) — in order."""
    if options.workers < 1:
        raise PreprocessError(f"--workers must be >= 1, got {options.workers}")
    start = time.perf_counter()
    encoder = TextEncoder(  # fails early
        options.tokenizer_model, options.tokenizer_type, options.tokenizer_options
    )
    fingerprint = tokenizer_fingerprint(encoder)
    out_dir = os.path.dirname(os.path.abspath(options.output_prefix))
    check_output_dir(out_dir, "--output-prefix", label=f"--output-prefix {options.output_prefix}")
    os.makedirs(out_dir, exist_ok=True)
    outputs = _Outputs(options.output_prefix, keys, encoder.vocab_size)
    documents, tokens = dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
    skipped: Counter = Counter()
    examples: dict[str, list[str]] = {}
    input_bytes = 0
    limit = _InflightLimit(options.max_inflight_bytes)

    in_flight: deque[tuple[Any, int]] = deque()  # (reference, size) of each task, in order

    def feed() -> Iterator:  # runs in the pool's task-feeding thread
        for task, ref, size in items:
            if not limit.acquire(size):
                return
            in_flight.append((ref, size))
            yield task

    def skip(reason: str, ref: Any) -> None:
        skipped[reason] += 1
        if len(examples.setdefault(reason, [])) < 5:
            examples[reason].append(describe(ref))

    pool = multiprocessing.Pool(
        options.workers,
        initializer=_init_worker,
        initargs=(
            options.tokenizer_model,
            options.tokenizer_type,
            options.tokenizer_options,
            options.append_eod,
            keys,
        ),
    )
    progress = None
    try:
        chunksize = 4 if worker_fn is _encode_file else 64
        results = pool.imap(worker_fn, feed(), chunksize)
        progress = _Progress(total, options.log_interval, options.progress_bar, start)
        # The workers tokenize while the main process imports megatron-core.
        outputs.open()
        builder_ready = time.perf_counter() - start
        logger.debug("IndexedDatasetBuilder ready after %.2f s", builder_ready)
        for result in results:
            ref, size = in_flight.popleft()
            limit.release(size)
            if worker_fn is _encode_file:
                reason, array, nbytes = result
                per_key = [(reason, array)]
                error = None
            else:
                per_key, nbytes, error = result
            if error is not None:
                raise PreprocessError(f"{describe(ref)}: {error}")
            input_bytes += nbytes
            new_docs = new_tokens = 0
            for k, (reason, array) in enumerate(per_key):
                if reason is not None:
                    skip(reason, ref)
                    continue
                outputs.builders[k].add_document(array, [array.size])
                documents[keys[k]] += 1
                tokens[keys[k]] += int(array.size)
                new_docs += 1
                new_tokens += int(array.size)
            progress.update(new_docs, new_tokens, nbytes)
        if not any(documents.values()):
            raise PreprocessError(
                f"no documents to write: every input was skipped ({dict(skipped)})"
                if skipped
                else "no documents to write: the input is empty"
            )
        empty = [k for k in keys if not documents[k]]
        if empty:
            raise PreprocessError(f"no documents for json key(s) {', '.join(empty)}")
        outputs.finalize()
        for k, key in enumerate(keys):
            source = {**sources, "json_key": key, "input_bytes": input_bytes}
            source["skipped"] = dict(sorted(skipped.items()))
            outputs.write_metadata(
                k, documents[key], tokens[key], options.append_eod, fingerprint, source
            )
        pool.close()
        pool.join()
        outputs.commit()
    except BaseException:
        limit.close()
        pool.terminate()
        pool.join()
        outputs.discard()
        raise
    finally:
        if progress is not None:
            progress.close()
    output_bytes = sum(
        os.path.getsize(p + s) for p in outputs.finals for s in (".bin", ".idx", ".meta.json")
    )
    return PreprocessSummary(
        documents=documents,
        tokens=tokens,
        input_bytes=input_bytes,
        output_bytes=output_bytes,
        seconds=time.perf_counter() - start,
        builder_ready_seconds=builder_ready,
        skipped=skipped,
        skipped_examples=examples,
        outputs=list(outputs.finals),
    )


def preprocess_files(files: Sequence[SourceFile], options: PreprocessOptions) -> PreprocessSummary:
    """Tokenize source files, one document each, into ``{output_prefix}_text_document``.

    Args:
        files: in output order (see :mod:`megatron_dlm.data.corpus`).
        options: see :class:`PreprocessOptions`.

    Raises:
        PreprocessError: no documents; TokenizerError: unusable tokenizer.
    """
    if not files:
        raise PreprocessError(
            "no input files: the directories and --include/--exclude patterns select nothing"
        )
    items = []
    for f in files:
        path = str(f.path)
        try:
            size = os.path.getsize(path)
        except OSError:
            size = 0
        items.append((path, path, size))
    roots = sorted({str(f.root) for f in files})
    return _run(
        options,
        ["text"],
        _encode_file,
        items,
        len(items),
        {"input_dirs": roots, "files": len(files)},
        str,
    )


def preprocess_jsonl(
    paths: Sequence[str | os.PathLike], json_keys: Sequence[str], options: PreprocessOptions
) -> PreprocessSummary:
    """Tokenize JSON lines: field ``key`` of each record into ``{output_prefix}_{key}_document``.

    Args:
        paths: jsonl files (``.gz`` decompressed), in output order.
        json_keys: one output dataset per key.
        options: see :class:`PreprocessOptions`.

    Raises:
        PreprocessError: no documents, or a line that is not a JSON object (file and line
            named); TokenizerError: unusable tokenizer.
    """
    if not json_keys:
        raise PreprocessError("--json-keys needs at least one key")
    names = [os.fspath(p) for p in paths]

    def lines() -> Iterator[tuple[Any, Any, int]]:
        for file_index, path in enumerate(names):
            lineno = 0
            try:
                with open_text(path) as f:
                    for lineno, line in enumerate(f, start=1):
                        if line.strip():
                            yield (file_index, lineno, line), (file_index, lineno), len(line)
            except (OSError, UnicodeDecodeError, EOFError) as exc:
                raise PreprocessError(f"{path}:{lineno + 1}: cannot read: {exc}") from exc

    return _run(
        options,
        list(json_keys),
        _encode_json_line,
        lines(),
        None,
        {"inputs": names},
        lambda ref: f"{names[ref[0]]}:{ref[1]}",
    )
