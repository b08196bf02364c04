"""Outputs: checks that one can be written, made before any work that would be lost otherwise,
and :func:`atomic_write`, which never leaves a half-written file.

Nothing is created by the checks: each walks up to the nearest existing ancestor, which must be
a writable folder. Their errors are ``OSError`` subclasses whose message names the flag and
path (``errno`` unset), so that a tool prints them as they are.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _writable_ancestor(target: Path, lead: str) -> None:
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(
            f"{lead}: cannot be created, {existing} is a file, not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{lead}: cannot write there ({existing} is read-only or not writable)"
        )


def check_output_dir(path: str | os.PathLike, flag: str, *, label: str | None = None) -> None:
    """Raise if ``path`` cannot be (created as) a writable folder.

    Args:
        path: the folder.
        flag: the flag that named it; messages start with ``"{flag} {path}"``.
        label: what messages start with instead (``"--output-prefix data/x"`` for its folder).

    Raises:
        NotADirectoryError: ``path`` is a file, or lies below one.
        PermissionError: the folder (or the one it would be created in) is not writable,
            e.g. on a read-only filesystem.
    """
    target = Path(path)
    lead = label or f"{flag} {target}"
    where = f" {target}" if label else ""
    if target.exists():
        if not target.is_dir():
            raise NotADirectoryError(f"{lead}:{where} exists and is not a directory")
        if not os.access(target, os.W_OK | os.X_OK):
            raise PermissionError(f"{lead}: cannot write in{where or ' it'} (read-only)")
        return
    _writable_ancestor(target, lead)


def check_output_file(path: str | os.PathLike, flag: str) -> None:
    """Raise if the file ``path`` cannot be (created and) written.

    Raises:
        IsADirectoryError: ``path`` is a folder.
        NotADirectoryError, PermissionError: as :func:`check_output_dir` for its folder.
    """
    target = Path(path)
    lead = f"{flag} {target}"
    if target.is_dir():
        raise IsADirectoryError(f"{lead}: is a directory, not a file")
    if target.exists() and not os.access(target, os.W_OK):
        raise PermissionError(f"{lead}: cannot write it (read-only)")
    _writable_ancestor(target, lead)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """``with atomic_write(path) as f:`` write ``f``; it becomes ``path`` only if the block
    completes.

    The file is written under a temporary name in the same folder (created if missing) and
    renamed over ``path``; an error (a full disk, an exception in the block) removes it and
    leaves an existing ``path`` as it was. The file gets the permissions a new file would.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp)
