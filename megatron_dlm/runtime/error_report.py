"""One error message per job, however many ranks hit the error.

Under ``torchrun`` every rank runs the same checks, so a bad flag or file fails on all of them;
printing it N times buries it. A rank that hits an error the others do not see (a file only it
writes) must still get its message out, and the ranks left waiting for it in a collective then
fail with a secondary error ("connection closed by peer") that should not add a traceback.

So the first rank to report an error claims it in a key-value store every rank reaches (the
torchrun agent's store, which outlives the ranks, else the process group's), prints it and
records its exit code; later reports stay silent, and :func:`exit_code_reported` tells a rank
whose own failure came after that report which code to exit with. Without a reachable store
(no launcher and no process group) rank 0 prints.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time

logger = logging.getLogger(__name__)

_KEY = "megatron_dlm/error"


def _key() -> str:
    # A torchrun restart reuses the agent's store: one key per attempt.
    run = os.environ.get("TORCHELASTIC_RUN_ID", "")
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "")
    return f"{_KEY}/{run}/{attempt}" if run else _KEY


def _store():
    """A c10d store shared by every rank of this job, or None."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        try:
            return dist.TCPStore(
                os.environ["MASTER_ADDR"],
                int(os.environ["MASTER_PORT"]),
                is_master=False,
                timeout=datetime.timedelta(seconds=5),
                wait_for_workers=False,
            )
        except Exception as exc:  # the agent is gone: fall back to the process group's store
            logger.debug("torchrun agent store unreachable: %s", exc)
    if dist.is_available() and dist.is_initialized():
        try:
            return dist.distributed_c10d._get_default_store()
        except Exception as exc:  # a torch without it, or the store's host rank is gone
            logger.debug("process group store unavailable: %s", exc)
    return None


def report_error(message: str, exit_code: int) -> bool:
    """Print ``message`` on stderr unless another rank of the job already reported an error.

    Returns:
        Whether this rank printed it.
    """
    first = os.environ.get("RANK", "0") == "0"
    store = _store()
    if store is not None:
        try:
            first = store.add(f"{_key()}/count", 1) == 1
            if first:
                store.set(f"{_key()}/code", str(exit_code))
        except Exception as exc:
            logger.debug("could not record the error in the store: %s", exc)
    if first:
        print(message, file=sys.stderr, flush=True)
    return first


def exit_code_reported(wait_s: float = 30.0) -> int | None:
    """The exit code of an error another rank of this job reported, if any.

    Waits up to ``wait_s`` for the report: the failing rank tears its process group down (which
    is what fails this rank's collective) just before it reports.
    """
    store = _store()
    if store is None:
        return None
    key = f"{_key()}/code"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if store.check([key]):
                return int(store.get(key))
        except Exception as exc:
            logger.debug("could not read the store: %s", exc)
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
