"""Run a function on N ranks (gloo on CPU, NCCL on GPUs): the multi-rank test harness.

    from megatron_dlm.testing import run_distributed

    def check_tp(cfg_dict):            # module level, so it pickles
        ...                            # RANK / WORLD_SIZE / MASTER_* are set; call init_distributed
        return some_picklable_result

    results = run_distributed(check_tp, world_size=2, args=(cfg_dict,))   # one per rank

Workers are spawned once per world size and reused: importing torch and megatron-core costs
several seconds per process, more than most tests. Each call gets a fresh rendezvous port and
tears down its process groups afterwards. A call that raises shows the failing rank's
traceback; a call that hangs past ``timeout`` kills the pool (the next call starts a new one).
Each worker leads a process group that is killed with it, so processes started inside a call
(megatron-core's async checkpoint writer runs a multiprocessing Manager server) never outlive
the test session, even when a worker crashes or is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

DEFAULT_TIMEOUT_S = 240.0
_DIED = "the worker process died (killed or crashed)"


class DistributedTestError(AssertionError):
    """A rank raised, or the ranks did not finish in time."""


def _worker_main(rank: int, world_size: int, conn: Connection, env: dict[str, str]) -> None:
    # Lead a process group, so that the processes code run here starts (megatron-core's async
    # checkpoint writer starts a multiprocessing Manager server, DataLoader workers, ...) end
    # with the worker instead of outliving the test session.
    os.setpgrp()
    os.environ.update(env)
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
    import torch

    torch.set_num_threads(int(env.get("OMP_NUM_THREADS", "1")))
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the test process is gone
            task = None
        if task is None:
            sys.stdout.flush()
            sys.stderr.flush()
            os.killpg(os.getpgrp(), signal.SIGKILL)  # this worker and what it started
        fn, args, kwargs, port = task
        os.environ["MASTER_PORT"] = str(port)
        try:
            result = ("ok", fn(*args, **kwargs))
        except BaseException as exc:
            result = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        finally:
            try:
                from megatron_dlm.runtime.distributed import destroy_distributed

                destroy_distributed()
            except Exception:
                pass
        try:
            conn.send(result)
        except Exception as exc:
            conn.send(("error", f"could not send the result back: {exc!r}"))


class _Pool:
    def __init__(self, world_size: int, env: dict[str, str]):
        ctx = mp.get_context("spawn")
        self.world_size = world_size
        self.conns: list[Connection] = []
        self.procs = []
        for rank in range(world_size):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main, args=(rank, world_size, child, env), daemon=False
            )
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def close(self, kill: bool = False) -> None:
        for conn, proc in zip(self.conns, self.procs):
            if not kill and proc.is_alive():
                with contextlib.suppress(BrokenPipeError, OSError):
                    conn.send(None)
        for proc in self.procs:
            proc.join(timeout=0 if kill else 5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            # Whatever the worker started, even if the worker itself is gone (a process group
            # id is not reused while any member lives).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for conn in self.conns:
            conn.close()


_POOLS: dict[int, _Pool] = {}


def _pool(world_size: int) -> _Pool:
    pool = _POOLS.get(world_size)
    if pool is None or not pool.alive():
        if pool is not None:
            pool.close(kill=True)
        env = {
            "MASTER_ADDR": "127.0.0.1",
            # Each rank gets one thread: N ranks share the machine's cores.
            "OMP_NUM_THREADS": os.environ.get("MEGATRON_DLM_TEST_THREADS", "1"),
            "PYTHONWARNINGS": "ignore",
        }
        pool = _POOLS[world_size] = _Pool(world_size, env)
    return pool


def shutdown_pools() -> None:
    """Stop all worker pools (registered at exit; tests may call it too)."""
    for pool in _POOLS.values():
        pool.close()
    _POOLS.clear()


atexit.register(shutdown_pools)


def run_distributed(
    fn: Callable[..., Any],
    world_size: int,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[Any]:
    """Run ``fn(*args, **kwargs)`` on ``world_size`` ranks; return the per-rank results.

    ``fn`` must be importable by name (a module-level function). Inside it, the environment
    holds ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``, so
    :func:`megatron_dlm.runtime.distributed.init_distributed` works as under torchrun; process
    groups are destroyed after ``fn`` returns.
    """
    from megatron_dlm.runtime.distributed import free_port

    pool = _pool(world_size)
    port = free_port()
    task = (fn, tuple(args), dict(kwargs or {}), port)
    try:
        for conn in pool.conns:
            conn.send(task)
    except (BrokenPipeError, OSError):  # a worker died since the last call: start afresh
        _POOLS.pop(world_size, None)
        pool.close(kill=True)
        pool = _pool(world_size)
        for conn in pool.conns:
            conn.send(task)
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    pending = {conn: rank for rank, conn in enumerate(pool.conns)}
    while pending:
        remaining = deadline - time.monotonic()
        ready = wait(list(pending), timeout=max(remaining, 0))
        if not ready:
            pool.close(kill=True)
            _POOLS.pop(world_size, None)
            raise DistributedTestError(
                f"{fn.__name__} on {world_size} ranks did not finish within {timeout:.0f} s; "
                f"ranks still running: {sorted(pending.values())}"
                + "".join(f"\n--- rank {r} raised:\n{e}" for r, e in sorted(errors.items()))
            )
        for conn in ready:
            rank = pending.pop(conn)
            try:
                status, payload = conn.recv()
            except (EOFError, OSError):
                status, payload = "error", _DIED
            (results if status == "ok" else errors)[rank] = payload
        if errors and pending:
            # Peers of a failed rank usually block in a collective: give them a moment only.
            deadline = min(deadline, time.monotonic() + 10)
    if errors:
        if _DIED in errors.values() or not pool.alive():
            _POOLS.pop(world_size, None)
            pool.close(kill=True)
        first = min(errors)
        raise DistributedTestError(
            f"{fn.__name__} failed on rank(s) {sorted(errors)} of {world_size}; "
            f"rank {first}:\n{errors[first]}"
        )
    return [results[rank] for rank in range(world_size)]
