"""A manifest of every file in a checkpoint: sizes and sha256, written at save, verified at load.

``iter_XXXXXXX/manifest.json``::

    {"format": "megatron-dlm-manifest", "version": 1, "algorithm": "sha256",
     "files": {"__0_0.distcp": {"bytes": 7340032, "sha256": "..."}, "common.pt": {...}, ...}}

dist_checkpointing checks neither sizes nor contents: a truncated shard fails deep inside torch,
and flipped bytes load silently as wrong weights. The work is spread over the ranks (rank ``r``
hashes files ``r, r + world, ...``), so saving and verifying cost ``bytes / world`` per rank.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from megatron_dlm.checkpoint.errors import CheckpointError

MANIFEST_FILE = "manifest.json"
FORMAT = "megatron-dlm-manifest"
_BLOCK = 1 << 22


def file_digest(path: Path) -> dict:
    """``{"bytes": size, "sha256": hex}`` of one file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _listed(directory: Path) -> list[str]:
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and p.name != MANIFEST_FILE
    )


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(obj, world: int) -> list:
    if world == 1:
        return [obj]
    out: list = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def write_manifest(directory: str | Path) -> None:
    """Hash every file of the (complete) checkpoint in ``directory`` and write the manifest.

    Collective when torch.distributed is initialised (every rank hashes a share; rank 0
    writes). Call after all ranks finished writing.
    """
    directory = Path(directory)
    rank, world = _world()
    names = _gather(_listed(directory) if rank == 0 else None, world)[0]
    mine = {name: file_digest(directory / name) for name in names[rank::world]}
    shares = _gather(mine, world)
    if rank == 0:
        files = {name: entry for share in shares for name, entry in share.items()}
        record = {"format": FORMAT, "version": 1, "algorithm": "sha256",
                  "files": dict(sorted(files.items()))}  # fmt: skip
        tmp = directory / f"{MANIFEST_FILE}.tmp"
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, directory / MANIFEST_FILE)


def read_manifest(directory: str | Path) -> dict[str, dict] | None:
    """The manifest's file table, or None for a checkpoint written without one.

    Raises:
        CheckpointError: the manifest exists but is unreadable.
    """
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record.get("format") != FORMAT or not isinstance(record.get("files"), dict):
            raise ValueError("not a Megatron-DLM manifest")
    except (OSError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: unreadable manifest ({exc})") from exc
    return record["files"]


def _check(directory: Path, name: str, expected: dict) -> str | None:
    path = directory / name
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != expected["bytes"]:
        return f"{name} has {size} bytes, the manifest says {expected['bytes']} (truncated?)"
    if file_digest(path)["sha256"] != expected["sha256"]:
        return f"{name} does not match its sha256 in the manifest (corrupted)"
    return None


def verify_manifest(
    directory: str | Path, *, names: list[str] | None = None, collective: bool = True
) -> bool:
    """Check files of the checkpoint in ``directory`` against its manifest.

    Args:
        names: only these files (default: all); e.g. ``["common.pt"]`` before reading it.
        collective: split the work over the ranks of the initialised world and agree on the
            result (every rank must call it); otherwise check everything in this process.

    Returns:
        False if the checkpoint has no manifest (written before manifests existed), else True.

    Raises:
        CheckpointError: a file is missing, of another size, or corrupted (the first few named).
    """
    directory = Path(directory)
    files = read_manifest(directory)
    if files is None:
        return False
    wanted = sorted(files) if names is None else [n for n in names if n in files]
    rank, world = _world() if collective else (0, 1)
    problems = [p for name in wanted[rank::world] if (p := _check(directory, name, files[name]))]
    if world > 1:
        problems = [p for share in _gather(problems, world) for p in share]
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3
                                          else "")  # fmt: skip
        raise CheckpointError(f"{directory}: the checkpoint is damaged: {shown}")
    return True
