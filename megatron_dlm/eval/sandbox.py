"""Run model-written Python in a sandbox (HumanEval-style functional checks).

    result = run_program("assert 1 + 1 == 2")   # ExecutionResult(passed=True, status='passed')

Where Linux lets a process create user namespaces (most distributions, unprivileged or as
root), each program runs in namespaces of its own (user, mount, PID, network, IPC, UTS, cgroup),
built by ``sandbox_init.py``: a root holding read-only binds of the system and Python
directories only, a private writable tmpfs ``/sandbox`` (cwd, ``$HOME``), no network interface,
no capabilities and ``PR_SET_NO_NEW_PRIVS``, a PID namespace whose every process dies with the
program or at the timeout, rlimits on CPU time, memory, file size, processes and open files.
The PEP 578 audit hook of the fallback stays on inside as an inner layer.

Where namespaces cannot be created, ``isolation="auto"`` falls back, with a warning logged once,
to that audit hook and the rlimits alone: a guard against accidents that a program can get
around (``_posixsubprocess.fork_exec`` starts processes the hook never sees), which lets it read
any file. docs/hf.md states exactly what is and is not isolated.
"""

from __future__ import annotations

import functools
import logging
import marshal
import os
import platform
import pwd
import select
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ISOLATION_MODES = ("auto", "namespaces", "audit-hook")
_INIT_SCRIPT = Path(__file__).with_name("sandbox_init.py")
_SYSTEM_PATHS = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
    "/etc/alternatives",
)  # fmt: skip
_PROGRAM_ENV = {
    "PATH": "/usr/bin:/bin", "HOME": "/sandbox", "TMPDIR": "/sandbox", "LANG": "C.UTF-8",
}  # fmt: skip
_WORKDIR = "/sandbox"  # the writable tmpfs (sandbox_init.WORKDIR)
_STDERR_TAIL = 2000
_PROBE_TIMEOUT_S = 60.0

_RLIMITS = r"""
import resource
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu} + 1))
resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))
resource.setrlimit(resource.RLIMIT_NPROC, ({nproc}, {nproc}))
resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
"""

_AUDIT_HOOK = r"""
import os, sys
_root = os.path.realpath(os.getcwd())
_BLOCKED = {
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto",
    "socket.sendmsg", "ctypes.dlopen", "os.kill", "os.killpg", "signal.pthread_kill",
    "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate", "shutil.rmtree",
}
_PATH_EVENTS = {
    "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.unlink", "os.replace", "os.chdir",
}

def _inside(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        return False
    full = os.path.realpath(path)  # relative paths resolve against the current directory
    return full == _root or full.startswith(_root + os.sep)

def _guard(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event in _PATH_EVENTS:
        for path in args[:2]:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                raise PermissionError(f"sandbox: {event} outside the working directory")
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
        )
        if writing and isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
            raise PermissionError("sandbox: writing outside the working directory")

sys.addaudithook(_guard)
del _guard
"""


@dataclass(frozen=True)
class ExecutionResult:
    passed: bool
    status: str
    """'passed', 'failed', 'timeout', 'memory' or 'error'."""
    detail: str = ""
    isolation: str = ""
    """'namespaces' or 'audit-hook': how the program was confined ('' if it never ran)."""


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    memory: int
    cpu: int
    fsize: int
    disk: int
    nproc: int
    nofile: int = 256


class _SetupError(RuntimeError):
    """The namespaces could not be set up (as opposed to the program failing)."""


def run_program(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_file_mb: int = 16,
    disk_mb: int = 64,
    max_processes: int = 8,
    readonly_paths: Sequence[str | Path] = (),
    isolation: str = "auto",
    audit_hook: bool = True,
    workdir: str | Path | None = None,
) -> ExecutionResult:
    """Execute ``program`` in the sandbox; it passes if it exits with status 0.

    Args:
        program: Python source (dedented first).
        timeout_s: wall-clock limit; the CPU-time limit is one second more.
        memory_mb: address-space limit of each process.
        max_file_mb: largest file the program may write.
        disk_mb: size of the writable ``/sandbox`` tmpfs (namespaces only).
        max_processes: processes and threads the program may have at once.
        readonly_paths: host files or directories to show read-only at the same path
            (namespaces only). A Unix socket in one stays connectable: do not list any.
        isolation: ``"auto"`` (namespaces where possible, else the audit hook with a warning),
            ``"namespaces"`` (a failed result instead of the fallback) or ``"audit-hook"``.
        audit_hook: keep the audit hook on inside the namespaces (the fallback always has it).
        workdir: where the fallback creates its temporary working directory.

    Raises:
        ValueError: an unknown ``isolation``, a missing ``readonly_paths`` entry, or
            ``audit_hook=False`` with ``isolation="audit-hook"``.
    """
    if isolation not in ISOLATION_MODES:
        raise ValueError(f"isolation={isolation!r}: expected one of {', '.join(ISOLATION_MODES)}")
    if not audit_hook and isolation == "audit-hook":
        raise ValueError("audit_hook=False leaves isolation='audit-hook' with no guard at all")
    binds = _bind_paths(readonly_paths)
    limits = _Limits(
        timeout_s=timeout_s,
        memory=memory_mb * 2**20,
        cpu=max(1, int(timeout_s) + 1),
        fsize=max_file_mb * 2**20,
        disk=disk_mb * 2**20,
        nproc=max_processes,
    )
    program = textwrap.dedent(program)
    if isolation != "audit-hook":
        reason = namespaces_unavailable()
        if reason is None:
            try:
                return _run_in_namespaces(program, limits, binds, audit_hook)
            except _SetupError as exc:
                return ExecutionResult(False, "error", f"sandbox setup failed: {exc}")
        if isolation == "namespaces":
            return ExecutionResult(False, "error", f"sandbox: {reason}")
    else:
        _warn_weaker("isolation='audit-hook' was asked for")
    return _run_with_audit_hook(program, limits, workdir)


@functools.cache
def namespaces_unavailable() -> str | None:
    """Why programs cannot run in namespaces of their own here, or None if they can.

    Found out once per process by running an empty program; a fallback is logged then.
    """
    if not sys.platform.startswith("linux"):
        reason = f"Linux namespaces do not exist on {sys.platform}"
    else:
        limits = _Limits(_PROBE_TIMEOUT_S, 256 * 2**20, 60, 2**20, 2**20, 8)
        try:
            result = _run_in_namespaces("pass", limits, _bind_paths(()), audit_hook=False)
            reason = None if result.passed else f"an empty program failed: {result.detail}"
        except _SetupError as exc:
            reason = str(exc)
    if reason is not None:
        _warn_weaker(f"Linux namespaces are unavailable ({reason})")
    return reason


@functools.cache
def _warn_weaker(why: str) -> None:
    logger.warning(
        "sandbox: %s; model-written code runs under a Python audit hook and rlimits only. "
        "That isolation is weaker: a program can start processes the hook never sees "
        "(_posixsubprocess.fork_exec), write anywhere its user may, reach the network and "
        "read any file. Run untrusted code where user namespaces are allowed, or in a VM.",
        why,
    )


@functools.cache
def _note(text: str) -> None:
    logger.warning("sandbox: %s; that part of the isolation is missing here", text)


def _bind_paths(readonly_paths: Sequence[str | Path]) -> list[str]:
    """Host paths to mount read-only in the sandbox: system, Python, then the caller's."""
    python = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    python.add(os.path.realpath(sys.executable))
    extra = []
    for path in readonly_paths:
        full = os.path.realpath(path)
        if not os.path.exists(full):
            raise ValueError(f"readonly_paths: {path} does not exist (or is not reachable)")
        if full == "/":
            raise ValueError("readonly_paths: '/' would show the whole filesystem")
        for reserved in (_WORKDIR, "/proc", "/dev"):
            if full == reserved or full.startswith(reserved + "/"):
                raise ValueError(f"readonly_paths: {path} is under the sandbox's own {reserved}")
        extra.append(full)
    binds: list[str] = []
    for path in [*_SYSTEM_PATHS, *sorted(python), *extra]:
        if path != "/" and not any(path == b or path.startswith(b + "/") for b in binds):
            binds.append(path)
    return binds


def _run_in_namespaces(
    program: str, limits: _Limits, binds: list[str], audit_hook: bool
) -> ExecutionResult:
    uid, gid = _outer_ids()
    request = {
        "program": (_AUDIT_HOOK + "\n" if audit_hook else "") + program,
        "env": _PROGRAM_ENV,
        "binds": binds,
        "outer_uid": uid,
        "outer_gid": gid,
        "host_root": os.geteuid() == 0,
        "limits": {
            "memory": limits.memory,
            "cpu": limits.cpu,
            "fsize": limits.fsize,
            "nproc": limits.nproc + 1 + _nproc_baseline(uid, namespaced=True),  # + init
            "nofile": limits.nofile,
        },
        "disk": {"bytes": limits.disk, "inodes": 4096},
    }
    deadline = time.monotonic() + limits.timeout_s
    status_r, status_w = os.pipe()
    try:
        # The base interpreter (a venv's python links to it): it is inside the sandbox's view.
        proc = subprocess.Popen(
            [os.path.realpath(sys.executable), "-I", "-S", "-B", str(_INIT_SCRIPT),
             str(status_w), str(os.getpid())],
            pass_fds=(status_w,), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, env={"LANG": "C.UTF-8"}, start_new_session=True,
        )  # fmt: skip
    except OSError as exc:
        os.close(status_r)
        raise _SetupError(f"could not start the interpreter: {exc}") from exc
    finally:
        os.close(status_w)
    try:
        try:
            proc.stdin.write(marshal.dumps(request))
            proc.stdin.close()
        except OSError as exc:  # it died at once
            raise _SetupError(f"{exc}: {_stderr_of(proc)}") from exc
        stderr, timed_out = _drain(proc.stderr, deadline)
        if timed_out:
            return ExecutionResult(False, "timeout", f"exceeded {limits.timeout_s:g} s",
                                   "namespaces")  # fmt: skip
        proc.wait()
        lines = _read_all(status_r).decode(errors="replace").splitlines()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # launcher, unsharer, init: the namespace dies
            proc.wait()
        proc.stderr.close()
        os.close(status_r)
    for line in lines:
        if line.startswith("note "):
            _note(line.removeprefix("note "))
    end = next((x for x in reversed(lines) if not x.startswith("note ")), "")
    if end.startswith("setup-error "):
        raise _SetupError(end.removeprefix("setup-error "))
    kind, _, value = end.partition(" ")
    if kind not in ("exit", "signal"):
        raise _SetupError(f"the sandbox ended without a status: {stderr.strip()}")
    return _result(kind, int(value), stderr, "namespaces")


def _run_with_audit_hook(
    program: str, limits: _Limits, workdir: str | Path | None
) -> ExecutionResult:
    nproc = limits.nproc + 1 + _nproc_baseline(os.getuid(), namespaced=False)
    guard = _RLIMITS.format(memory=limits.memory, cpu=limits.cpu, fsize=limits.fsize, nproc=nproc,
                            nofile=limits.nofile)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="mdlm-sandbox-", dir=workdir) as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(guard + _AUDIT_HOOK + "\n" + program)
        env = {**_PROGRAM_ENV, "HOME": tmp, "TMPDIR": tmp}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-B", str(path)],
                cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True,  # its own group, killed whole
            )  # fmt: skip
        except OSError as exc:
            return ExecutionResult(False, "error", f"could not start the interpreter: {exc}")
        try:
            stderr, timed_out = _drain(proc.stderr, time.monotonic() + limits.timeout_s)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.stderr.close()  # a detached grandchild may still hold the pipe: do not wait
            proc.wait()
        if timed_out:
            return ExecutionResult(False, "timeout", f"exceeded {limits.timeout_s:g} s",
                                   "audit-hook")  # fmt: skip
        code = proc.returncode
        return _result("signal" if code < 0 else "exit", abs(code), stderr, "audit-hook")


def _result(kind: str, value: int, stderr: str, isolation: str) -> ExecutionResult:
    if kind == "exit" and value == 0:
        return ExecutionResult(True, "passed", "", isolation)
    if "MemoryError" in stderr or (kind == "signal" and value in (signal.SIGKILL, signal.SIGSEGV)):
        return ExecutionResult(False, "memory", stderr, isolation)
    if kind == "signal" and value == signal.SIGXCPU:
        return ExecutionResult(False, "timeout", "CPU time limit", isolation)
    if kind == "signal":
        stderr = f"{stderr}\nkilled by {signal.Signals(value).name}".lstrip()
    return ExecutionResult(False, "failed", stderr, isolation)


def _outer_ids() -> tuple[int, int]:
    """The host uid/gid the namespace's root is mapped to: yours, or nobody's for root."""
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    try:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid
    except KeyError:
        return 65534, 65534


def _nproc_baseline(uid: int, *, namespaced: bool) -> int:
    """Tasks ``uid`` already has that RLIMIT_NPROC will count along with the program's.

    Since Linux 5.14 the count is per user namespace, so a fresh one starts from zero; before,
    and outside namespaces, it covers every process of the user on the machine.
    """
    release = tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit())
    if namespaced and release >= (5, 14):
        return 0
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            count += int(fields.get("Threads", "1"))
    return count


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _drain(pipe, deadline: float) -> tuple[str, bool]:
    """Read ``pipe`` to its end, keeping the last characters; (text, timed out)."""
    tail, fd = b"", pipe.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return tail.decode(errors="replace")[-_STDERR_TAIL:], True
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return tail.decode(errors="replace")[-_STDERR_TAIL:], False
        tail = (tail + chunk)[-4 * _STDERR_TAIL :]


def _stderr_of(proc: subprocess.Popen) -> str:
    """What a launcher that failed early said (it has exited or is about to)."""
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return "(the launcher did not exit)"
    return proc.stderr.read().decode(errors="replace")[-_STDERR_TAIL:].strip()
