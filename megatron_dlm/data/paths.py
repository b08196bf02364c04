"""Checks that an output can be written, made before any work that would be lost otherwise.

Nothing is created: each check walks up to the nearest existing ancestor, which must be a
writable folder. The errors are ``OSError`` subclasses whose message names the flag and path
(``errno`` unset), so that a tool prints them as they are.
"""

from __future__ import annotations

import os
from pathlib import Path


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
