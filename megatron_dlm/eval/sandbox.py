"""Run model-written Python in a sandboxed subprocess (HumanEval-style functional checks).

Each program runs in a fresh interpreter (``python -I``: no site-packages hooks, no environment
variables read) inside its own temporary working directory, with:

* a wall-clock timeout (the whole process group is killed) and a CPU-time limit;
* an address-space limit (a memory bomb gets MemoryError or is killed);
* a file-size limit, and an audit hook (PEP 578) installed before the program runs that refuses
  writes, deletes and renames outside the working directory, starting processes, network
  connections and loading native code through ctypes.

The audit hook cannot be removed from Python code, but this is a guard against accidents of
generated code, not a security boundary against adversarial code: run untrusted workloads in a
container or VM as well.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

_GUARD = r"""
import os, resource, sys
_root = os.path.realpath(os.getcwd())
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
resource.setrlimit(resource.RLIMIT_CPU, ({cpu}, {cpu}))
resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))
_BLOCKED = {{
    "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
    "os.forkpty", "pty.spawn", "socket.connect", "socket.bind", "socket.sendto",
    "ctypes.dlopen", "os.kill", "os.killpg", "signal.pthread_kill", "os.chmod", "os.chown",
    "os.symlink", "os.link", "os.truncate", "shutil.rmtree",
}}
_PATH_EVENTS = {{
    "os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.unlink", "os.replace", "os.chdir",
}}

def _inside(path):
    try:
        path = os.fsdecode(path)
    except TypeError:
        return False
    full = os.path.realpath(path)  # relative paths resolve against the current directory
    return full == _root or full.startswith(_root + os.sep)

def _guard(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {{event}} is not allowed")
    if event in _PATH_EVENTS:
        for path in args[:2]:
            if isinstance(path, (str, bytes, os.PathLike)) and not _inside(path):
                raise PermissionError(f"sandbox: {{event}} outside the working directory")
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


def run_program(
    program: str,
    *,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    max_file_mb: int = 16,
    workdir: str | Path | None = None,
) -> ExecutionResult:
    """Execute ``program`` in the sandbox; it passes if it exits with status 0."""
    guard = _GUARD.format(
        memory=memory_mb * 2**20, cpu=max(1, int(timeout_s) + 1), fsize=max_file_mb * 2**20
    )
    with tempfile.TemporaryDirectory(prefix="mdlm-sandbox-", dir=workdir) as tmp:
        path = Path(tmp) / "program.py"
        path.write_text(guard + "\n" + textwrap.dedent(program))
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "PYTHONHASHSEED": "0", "LANG": "C.UTF-8"}
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-B", str(path)],
                cwd=tmp,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            return ExecutionResult(False, "error", f"could not start the interpreter: {exc}")
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return ExecutionResult(False, "timeout", f"exceeded {timeout_s:g} s")
        text = stderr.decode(errors="replace")[-2000:]
        if proc.returncode == 0:
            return ExecutionResult(True, "passed")
        if "MemoryError" in text or proc.returncode in (-signal.SIGKILL, -signal.SIGSEGV):
            return ExecutionResult(False, "memory", text)
        if proc.returncode == -signal.SIGXCPU:
            return ExecutionResult(False, "timeout", "CPU time limit")
        return ExecutionResult(False, "failed", text)
