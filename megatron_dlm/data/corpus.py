"""Source-code corpora: files under directories, the standard library, a train/valid split.

The CPython standard library of the running interpreter is a real Python corpus that every
machine has; the quickstart and the tests train and evaluate on it:

    from megatron_dlm.data.corpus import stdlib_files, split_files
    files = stdlib_files()                      # ~600 .py files, ~11 MB (no tests)
    train, valid = split_files(files, valid_fraction=0.05)

Document order is deterministic: roots in the order given, then relative paths sorted by code
point. The split is by file, from a hash of the path relative to its root (``json/decoder.py``),
so it is the same on every machine and for every Python patch release that has the file, and
adding or removing a file never moves another one across the split.

Glob patterns (``--include`` / ``--exclude``) match paths relative to the root, with ``/`` as
separator: ``*`` and ``?`` stay within a path component, ``**`` spans components
(``**/*.py`` matches ``a.py`` and ``a/b/c.py``). An exclude pattern that matches a directory
skips everything below it (``test``, ``**/tests``).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DEFAULT_INCLUDE = ("**/*.py",)
STDLIB_EXCLUDE = (
    "site-packages",
    "dist-packages",
    "test",
    "**/test",
    "**/tests",
    "**/idle_test",
    "idlelib",
    "lib2to3",
    "**/__pycache__",
)
"""What :func:`stdlib_files` leaves out: installed packages, test suites, IDLE and lib2to3."""
STDLIB_EXCLUDE_WITH_TESTS = ("site-packages", "dist-packages", "**/__pycache__")
SPLIT_SALT = "megatron-dlm-split-v1"
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True, order=True)
class SourceFile:
    """A file of a corpus: its root directory and its path relative to it (``/``-separated)."""

    root: Path
    relpath: str

    @property
    def path(self) -> Path:
        return self.root / self.relpath


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern:
    """Compile a ``/``-separated glob (``*``, ``?``, ``[...]``, ``**``) to a full-match regex."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def matches_any(relpath: str, patterns: Iterable[str]) -> bool:
    """Whether ``relpath`` matches one of the glob ``patterns``."""
    return any(glob_to_regex(p).fullmatch(relpath) for p in patterns)


def find_source_files(
    root: str | os.PathLike,
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
) -> list[SourceFile]:
    """Files under ``root`` matching ``include`` and no ``exclude`` pattern, in sorted order.

    Raises:
        FileNotFoundError: ``root`` is not a directory.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"input directory {str(root)!r} does not exist")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not matches_any(prefix + d, exclude))
        for name in filenames:
            rel = prefix + name
            if matches_any(rel, include) and not matches_any(rel, exclude):
                found.append(SourceFile(root, rel))
    found.sort(key=lambda f: f.relpath)
    return found


def stdlib_dir() -> Path:
    """The standard library directory of the running interpreter (sysconfig's ``stdlib``)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(with_tests: bool = False) -> list[SourceFile]:
    """The standard library's ``.py`` files.

    Args:
        with_tests: keep the test suites, IDLE and lib2to3 (CPython 3.11: ~1,790 files,
            31.5 MB, vs ~600 files, 11 MB without). Installed packages are always left out.
    """
    exclude = STDLIB_EXCLUDE_WITH_TESTS if with_tests else STDLIB_EXCLUDE
    return find_source_files(stdlib_dir(), DEFAULT_INCLUDE, exclude)


def split_fraction(key: str, salt: str = SPLIT_SALT) -> float:
    """A stable number in [0, 1) for ``key``: sha256 of ``salt:key``, as a fraction."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(relpath: str, valid_fraction: float) -> str:
    """``"valid"`` for about ``valid_fraction`` of all paths, ``"train"`` for the rest."""
    return "valid" if split_fraction(relpath) < valid_fraction else "train"


def split_files(
    files: Sequence[SourceFile], valid_fraction: float = 0.05
) -> tuple[list[SourceFile], list[SourceFile]]:
    """Split ``files`` into (train, valid) by file; no file is in both, order is kept."""
    if not 0.0 <= valid_fraction <= 1.0:
        raise ValueError(f"--valid-fraction must lie in [0, 1], got {valid_fraction}")
    train, valid = [], []
    for f in files:
        (valid if split_of(f.relpath, valid_fraction) == "valid" else train).append(f)
    return train, valid


def collect_corpus(
    input_dirs: Sequence[str | os.PathLike] = (),
    include: Sequence[str] = DEFAULT_INCLUDE,
    exclude: Sequence[str] = (),
    stdlib: bool = False,
    stdlib_with_tests: bool = False,
    split: str = "all",
    valid_fraction: float = 0.05,
) -> list[SourceFile]:
    """The files of a corpus: the standard library (optional) then each input directory.

    Args:
        input_dirs: directories to walk, in this order (after the standard library).
        include: glob patterns a file must match (relative to its directory).
        exclude: glob patterns of files and directories to leave out.
        stdlib: start with the running interpreter's standard library (see
            :func:`stdlib_files`; ``include``/``exclude`` apply to the input directories).
        stdlib_with_tests: with ``stdlib``, keep its test suites.
        split: ``all``, or the ``train`` or ``valid`` part of :func:`split_files`.
        valid_fraction: share of files in the ``valid`` part.
    """
    if split not in ("all", "train", "valid"):
        raise ValueError(f"--corpus-split must be all, train or valid, got {split!r}")
    files = stdlib_files(stdlib_with_tests) if stdlib or stdlib_with_tests else []
    for d in input_dirs:
        files.extend(find_source_files(d, include, exclude))
    if split == "all":
        return files
    train, valid = split_files(files, valid_fraction)
    return train if split == "train" else valid


def expand_input_paths(patterns: Sequence[str]) -> list[Path]:
    """Files named by ``--input`` arguments: paths or globs (``**`` recursive), each sorted.

    Raises:
        FileNotFoundError: a path does not exist or a glob matches no file (named in the message).
    """
    paths: list[Path] = []
    for pattern in patterns:
        if os.path.isfile(pattern):
            matches = [pattern]
        elif _GLOB_CHARS.search(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        else:
            matches = []
        if not matches:
            what = "matches no file" if _GLOB_CHARS.search(pattern) else "does not exist"
            raise FileNotFoundError(f"--input {pattern!r} {what}")
        paths.extend(Path(m) for m in matches if Path(m) not in paths)
    return paths


def open_text(path: str | os.PathLike):
    """Open a text input for reading as UTF-8 (``.gz`` decompressed)."""
    if os.fspath(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def iter_jsonl_texts(paths: Sequence[str | os.PathLike], key: str) -> Iterable[str]:
    """The ``key`` field of each JSON line of ``paths`` (records without a string there are
    skipped).

    Raises:
        ValueError: a line is not JSON or not UTF-8 (the message names the file and line).
    """
    for path in paths:
        name = os.fspath(path)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rb") as f:
            lineno = 0
            while True:
                try:
                    raw = f.readline()
                except (EOFError, OSError) as exc:  # a truncated or corrupt .gz
                    raise ValueError(f"{name}:{lineno + 1}: cannot read: {exc}") from exc
                if not raw:
                    break
                lineno += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{name}:{lineno}: not UTF-8 ({exc})") from exc
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{name}:{lineno}: not valid JSON ({exc})") from exc
                text = record.get(key) if isinstance(record, dict) else None
                if isinstance(text, str) and text:
                    yield text
