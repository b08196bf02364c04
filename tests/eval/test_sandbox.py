"""HumanEval execution sandbox: results, limits, and a table of escape attempts.

Every escape attempt is a real program that ends with status 0 only if it got out: each is run
unsandboxed first (against targets in tmp dirs, a listener and a victim process of this test)
to show that it works, then in the sandbox with the audit hook and without it (the namespaces
alone), where both the program and the host must show that it failed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from megatron_dlm.eval import sandbox as sandbox_module
from megatron_dlm.eval.humaneval import (
    check_completion,
    evaluate_completions,
    load_problems,
    pass_at_k,
    truncate_completion,
)
from megatron_dlm.eval.sandbox import namespaces_unavailable, run_program

NO_NAMESPACES = namespaces_unavailable()
needs_namespaces = pytest.mark.skipif(
    NO_NAMESPACES is not None, reason=f"no Linux namespaces here: {NO_NAMESPACES}"
)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def test_all_164_problems_ship_with_the_package(problems):
    assert len(problems) == 164
    assert {"prompt", "test", "entry_point", "canonical_solution"} <= set(problems["HumanEval/0"])


def test_correct_completion_passes_and_wrong_one_fails(problems):
    problem = problems["HumanEval/0"]
    assert check_completion(problem, problem["canonical_solution"]).passed
    result = check_completion(problem, "    return False\n")
    assert not result.passed and result.status == "failed" and "AssertionError" in result.detail


def _canonical_failures(problems, ids):
    failures = {}
    for task_id in ids:
        result = check_completion(problems[task_id], problems[task_id]["canonical_solution"])
        if not result.passed or result.isolation != ("audit-hook" if NO_NAMESPACES else
                                                     "namespaces"):  # fmt: skip
            failures[task_id] = (result.status, result.isolation, result.detail[-300:])
    return failures


def test_canonical_solutions_pass_in_the_sandbox_sample(problems):
    assert _canonical_failures(problems, list(problems)[::8]) == {}  # 21 of the 164


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_in_the_sandbox(problems):
    assert _canonical_failures(problems, list(problems)) == {}


def test_infinite_loop_times_out():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", timeout_s=2)
    assert result.status == "timeout" and time.monotonic() - start < 10


def test_memory_bomb_is_stopped():
    result = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))\n",
                         timeout_s=20, memory_mb=256)  # fmt: skip
    assert result.status == "memory"


@pytest.mark.parametrize(
    "code",
    [
        "open({target!r}, 'w').write('escaped')",
        "import os\nos.chdir({parent!r})\nopen({name!r}, 'w').write('escaped')",
        "import pathlib\npathlib.Path({target!r}).write_text('escaped')",
        "import os\nos.rename('a.txt', {target!r})",
        "import subprocess\nsubprocess.run(['touch', {target!r}])",
        "import shutil\nshutil.copy(__file__, {target!r})",
    ],
)
def test_the_audit_hook_refuses_writes_outside_the_working_directory(tmp_path, code):
    target = tmp_path / "outside.txt"
    program = "open('a.txt', 'w').write('inside')\n" + code.format(
        target=str(target), parent=str(tmp_path), name=target.name
    )
    result = run_program(program, timeout_s=5, readonly_paths=[tmp_path] if not NO_NAMESPACES
                         else ())  # fmt: skip
    assert not result.passed and "sandbox" in result.detail
    assert not target.exists()


def test_writes_inside_the_working_directory_are_allowed():
    assert run_program("open('x.txt', 'w').write('1')\nassert open('x.txt').read() == '1'").passed


def test_no_network():
    result = run_program("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)")
    assert not result.passed and "socket.connect is not allowed" in result.detail


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="isolation='chroot'"):
        run_program("pass", isolation="chroot")
    with pytest.raises(ValueError, match="readonly_paths: .*missing does not exist"):
        run_program("pass", readonly_paths=[tmp_path / "missing"])
    with pytest.raises(ValueError, match="no guard at all"):
        run_program("pass", isolation="audit-hook", audit_hook=False)


# --- escape attempts -------------------------------------------------------------------------

# Starts a process the audit hook never hears of (subprocess.Popen minus its audit event).
SPAWN = """
import _posixsubprocess, os, sys
def spawn(argv, setsid=False):
    errpipe_r, errpipe_w = os.pipe()
    group = (-1,) if sys.version_info >= (3, 11) else ()
    pid = _posixsubprocess.fork_exec(
        [os.fsencode(a) for a in argv], [os.fsencode(argv[0])], True, (), None, None,
        -1, -1, -1, -1, -1, -1, errpipe_r, errpipe_w, True, setsid, *group, None, None, None, -1,
        None, *((False,) if group else ()))
    os.close(errpipe_w)
    assert not os.read(errpipe_r, 1000), "exec failed"
    return pid
"""

WRITE = "escaped"  # the attacks below try to create {dir}/escaped
READS = {"read a file"}  # attacks that leave no trace on the host when they work
ATTACKS = {
    # writing outside the working directory, into a directory the sandbox shows read-only
    "open": ("open({target!r}, 'w').write('x')", "Read-only file system"),
    "os.open": (
        "import os\nos.write(os.open({target!r}, os.O_WRONLY | os.O_CREAT), b'x')",
        "Read-only file system",
    ),
    "os.open with dir_fd": (
        "import os\nd = os.open({dir!r}, os.O_RDONLY)\n"
        "os.write(os.open('escaped', os.O_WRONLY | os.O_CREAT, dir_fd=d), b'x')",
        "Read-only file system",
    ),
    "/proc/self/fd": (
        "import os\nd = os.open({dir!r}, os.O_RDONLY)\n"
        "open(f'/proc/self/fd/{{d}}/escaped', 'w').write('x')",
        "Read-only file system",
    ),
    "symlink": (
        "import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('x')",
        "Read-only file system",
    ),
    "rename": (
        "import os\nopen('a', 'w').write('x')\nos.rename('a', {target!r})",
        "Invalid cross-device link",
    ),
    # starting processes that write outside
    "_posixsubprocess.fork_exec": (
        SPAWN + "os.waitpid(spawn(['/bin/sh', '-c', 'echo x > {target}']), 0)\n"
        "assert os.path.exists({target!r})",
        "Read-only file system",
    ),
    "os.posix_spawn": (
        "import os\nos.waitpid(os.posix_spawn('/bin/sh', ['sh', '-c', 'echo x > {target}'], "
        "{{}}), 0)\nassert os.path.exists({target!r})",
        "Read-only file system",
    ),
    "pty": (
        "import os, pty\npid, fd = pty.fork()\n"
        "if pid == 0:\n    os.execv('/bin/sh', ['sh', '-c', 'echo x > {target}'])\n"
        "os.waitpid(pid, 0)\nassert os.path.exists({target!r})",
        "out of pty devices",  # no /dev/ptmx in the sandbox
    ),
    "a python without the hook": (
        SPAWN + "os.waitpid(spawn([sys.executable, '-c', \"open({target!r}, 'w')\"]), 0)\n"
        "assert os.path.exists({target!r})",
        "Read-only file system",
    ),
    # reading the host's files
    "read a file": ("assert open({secret!r}).read() == 'secret'", "No such file or directory"),
    # network
    "socket": (
        "import socket\nsocket.create_connection(('127.0.0.1', {tcp_port}), timeout=5)"
        ".sendall(b'escaped')",
        "Network is unreachable",
    ),
    "raw sendmsg": (
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.sendmsg([b'escaped'], [], 0, ('127.0.0.1', {udp_port}))",
        "Network is unreachable",
    ),
    "abstract unix socket": (
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({abstract!r})\n"
        "s.sendall(b'escaped')",
        "Connection refused",
    ),
    # signalling processes outside
    "signal the parent": (
        "import os, signal\nos.kill({victim}, signal.SIGKILL)",
        "No such process",
    ),
}


class Host:
    """Targets outside the sandbox, and what reached them."""

    def __init__(self, tmp_path: Path):
        self.dir = tmp_path / "shown_read_only"
        self.dir.mkdir()
        self.dir.chmod(0o777)  # only the read-only mount stands between the program and it
        (tmp_path / "secret").write_text("secret")
        self.secret = tmp_path / "secret"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.received: list[bytes] = []
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.unix = socket.socket(socket.AF_UNIX)
        self.abstract = f"\0mdlm-sandbox-test-{uuid.uuid4().hex}"
        self.unix.bind(self.abstract)
        self.unix.listen()
        for server in (self.tcp, self.unix):
            threading.Thread(target=self._accept, args=(server,), daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()
        self.victim = subprocess.Popen(["sleep", "120"])

    def _accept(self, server):
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            self.received.append(conn.recv(100))

    def _receive(self):
        while True:
            try:
                self.received.append(self.udp.recv(100))
            except OSError:
                return

    def fields(self) -> dict:
        return {
            "dir": str(self.dir), "target": str(self.dir / WRITE), "secret": str(self.secret),
            "tcp_port": self.tcp.getsockname()[1], "udp_port": self.udp.getsockname()[1],
            "abstract": self.abstract, "victim": self.victim.pid,
        }  # fmt: skip

    def harmed(self) -> list[str]:
        time.sleep(0.1)  # let the listeners record what reached them
        harm = [f"{p.name} written" for p in self.dir.iterdir()]
        harm += [f"received {data!r}" for data in self.received if data]
        if self.victim.poll() is not None:
            harm.append("victim killed")
        return harm

    def close(self):
        self.victim.kill()
        self.victim.wait()
        for s in (self.tcp, self.udp, self.unix):
            s.close()


@pytest.fixture
def host(tmp_path):
    host = Host(tmp_path)
    yield host
    host.close()


def _unsandboxed(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=cwd,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


@needs_namespaces
@pytest.mark.parametrize("name", list(ATTACKS))
def test_escape_attempt_fails_in_the_sandbox(host, name):
    template, mechanism = ATTACKS[name]
    code = textwrap.dedent(template).format(**host.fields())
    for audit_hook in (True, False):
        result = run_program(code, timeout_s=20, readonly_paths=[host.dir], audit_hook=audit_hook)
        assert result.isolation == "namespaces"
        assert not result.passed, f"audit_hook={audit_hook}: the attack got out"
        assert host.harmed() == [], f"audit_hook={audit_hook}"
        if not audit_hook:  # the namespaces alone stopped it, and this is how
            assert mechanism in result.detail, result.detail
    # The same program unsandboxed: it works, so the sandbox is what stopped it.
    plain = _unsandboxed(code, host.work)
    assert plain.returncode == 0, plain.stderr
    assert host.harmed() != [] or name in READS


@needs_namespaces
def test_killing_every_process_reaches_only_the_sandbox(host):
    code = "import os, signal\nos.kill(-1, signal.SIGKILL)\n"  # never to be run unsandboxed
    result = run_program(code, timeout_s=20, audit_hook=False)
    # Linux spares the caller and PID 1 (the sandbox's init): nothing else there to signal.
    assert result.isolation == "namespaces" and "No such process" in result.detail
    assert host.harmed() == []


def _pid_namespace_members(ns: str) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        try:
            if entry.name.isdigit() and os.readlink(f"/proc/{entry.name}/ns/pid") == ns:
                members.append(int(entry.name))
        except OSError:  # gone, or not ours to look at
            pass
    return members


DETACH = (
    SPAWN
    + """
print(os.readlink("/proc/self/ns/pid"), spawn(["/bin/sleep", "60"], setsid=True), file=sys.stderr)
sys.exit(1)
"""
)


@needs_namespaces
def test_detached_processes_die_with_the_program(tmp_path):
    with open(tmp_path / "stderr", "w") as stderr:  # not a pipe: the sleeper would hold it
        subprocess.run([sys.executable, "-I", "-S", "-c", DETACH], stderr=stderr, timeout=60)
    sleeper = int((tmp_path / "stderr").read_text().split()[-1])  # it outlived the program
    try:
        assert Path(f"/proc/{sleeper}").exists()
    finally:
        os.kill(sleeper, 9)
    result = run_program(DETACH)
    ns = result.detail.split()[-2]
    assert ns.startswith("pid:[") and _pid_namespace_members(ns) == []


FORK_BOMB = (
    SPAWN
    + """
import time
spawn(["/bin/sh", "-c", "bomb() { bomb | bomb & }; bomb"])
time.sleep(2)
print(os.readlink("/proc/self/ns/pid"), len([p for p in os.listdir("/proc") if p.isdigit()]),
      file=sys.stderr)
time.sleep(60)
"""
)


@needs_namespaces
def test_fork_bomb_is_bounded_and_killed_at_the_timeout():
    result = run_program(FORK_BOMB, timeout_s=4, max_processes=16, memory_mb=64)
    assert result.status == "timeout"
    # The timeout result carries no stderr: run it again with the report printed first.
    result = run_program(FORK_BOMB.replace("time.sleep(60)", "sys.exit(1)"), timeout_s=10,
                         max_processes=16, memory_mb=64)  # fmt: skip
    ns, count = result.detail.split()[-2:]
    assert int(count) <= 16 + 1  # the program's processes, and init
    time.sleep(0.5)
    assert _pid_namespace_members(ns) == []


@needs_namespaces
def test_disk_bombs_fill_only_the_private_tmpfs():
    files = "n = 0\ntry:\n    while True:\n        open(f'f{n}', 'w').close()\n        n += 1\n"
    files += "except OSError as exc:\n    raise SystemExit(f'{n} files: {exc}')\n"
    result = run_program(files, timeout_s=30, audit_hook=False)
    count, error = result.detail.split(" files: ")
    assert 4000 < int(count) < 4096 and "No space left on device" in error
    data = "n = 0\ntry:\n    while True:\n        with open(f'f{n}', 'wb') as f:\n"
    data += "            f.write(bytes(2**20))\n        n += 1\n"
    data += "except OSError as exc:\n    raise SystemExit(f'{n} MiB: {exc}')\n"
    result = run_program(data, timeout_s=30, disk_mb=8, audit_hook=False)
    count, error = result.detail.split(" MiB: ")
    assert int(count) <= 8 and "No space left on device" in error


SHM_KEEP = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
shmid = libc.shmget(0, 64 << 20, 0o1600)  # IPC_PRIVATE, IPC_CREAT | 0600
address = libc.shmat(shmid, None, 0)
ctypes.memset(address, 1, 64 << 20)
libc.shmdt(ctypes.c_void_p(address))  # out of the address space, so out of RLIMIT_AS
kept = libc.shmctl(shmid, 2, ctypes.create_string_buffer(512)) == 0  # IPC_STAT
libc.shmctl(shmid, 0, None)  # IPC_RMID
too_big = libc.shmget(0, 1 << 30, 0o1600)  # over the 128 MiB memory limit
libc.shmctl(too_big, 0, None)
print(kept, too_big >= 0, file=sys.stderr)
sys.exit(0 if kept and too_big >= 0 else 1)
"""


@needs_namespaces
def test_sysv_shared_memory_does_not_outlive_its_use_or_the_memory_limit(tmp_path):
    result = run_program(SHM_KEEP, timeout_s=30, memory_mb=128, audit_hook=False)
    assert not result.passed and result.detail.split() == ["False", "False"], result.detail
    plain = _unsandboxed(SHM_KEEP, tmp_path)  # on the host: kept, however large (then removed)
    assert plain.returncode == 0, plain.stderr


@needs_namespaces
def test_the_program_has_no_privileges():
    code = """
import ctypes, os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
libc = ctypes.CDLL(None, use_errno=True)
raise SystemExit(" ".join([
    *(status[k].strip() for k in ("CapEff", "CapPrm", "CapBnd", "NoNewPrivs")),
    str(libc.unshare(0x10000000)), str(ctypes.get_errno()),  # a user namespace of its own
    str(libc.mount(None, b"/usr", None, 32 | 4096, None)), str(ctypes.get_errno()),  # rw again
]))
"""
    result = run_program(code, audit_hook=False)
    effective, permitted, bounding, no_new_privs, *calls = result.detail.split()
    assert {effective, permitted, bounding} == {"0000000000000000"} and no_new_privs == "1"
    assert calls == ["-1", "28", "-1", "1"]  # unshare: ENOSPC (none allowed); mount: EPERM


UNPRIVILEGED = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = sys.modules["sandbox"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sandbox)
status = "import sys\\nsys.exit(open('/proc/self/status').read())"
result = sandbox.run_program(status, audit_hook=False)
print(result.isolation, [line.split()[1] for line in result.detail.splitlines()
                         if line.startswith(("Uid:", "CapEff:", "NoNewPrivs:"))])
write = sandbox.SPAWN_FOR_TEST + "os.waitpid(spawn(['/bin/sh', '-c', 'echo x > %s']), 0)\\n"
write += "assert os.path.exists(%r)"
print(sandbox.run_program(write, readonly_paths=[sys.argv[2]]).passed)
"""


@needs_namespaces
def test_an_unprivileged_user_gets_the_same_sandbox(request):
    """As a user's laptop runs it: no root, the user's own uid mapped to root inside."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if os.geteuid() != 0 or shutil.which("setpriv") is None or python is None:
        pytest.skip("needs root, setpriv(1) and a system python3 to become an unprivileged user")
    if subprocess.run([*nobody, python, "-c", "import resource"], capture_output=True).returncode:
        pytest.skip(f"{python} cannot run as nobody here")
    shown = Path(tempfile.mkdtemp(prefix="mdlm-sandbox-test-"))  # pytest's tmp is root's only
    shown.chmod(0o777)
    request.addfinalizer(lambda: shutil.rmtree(shown))
    target = str(shown / "escaped")
    script = UNPRIVILEGED.replace("sandbox.SPAWN_FOR_TEST", repr(SPAWN)) % (target, target)
    sandbox_py = Path(sandbox_module.__file__)
    out = subprocess.run([*nobody, python, "-c", script, str(sandbox_py), str(shown)],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["namespaces ['0', '0000000000000000', '1']", "False"]
    assert list(shown.iterdir()) == []


FALLBACK = """
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
from megatron_dlm.eval.sandbox import run_program
print("auto", run_program("assert 1 + 1 == 2").isolation)
print("outside", run_program("open(%r, 'w')"))
print("strict", run_program("pass", isolation="namespaces").status)
"""


def test_falls_back_to_the_audit_hook_with_a_warning(tmp_path):
    command = [sys.executable, "-c", FALLBACK % str(tmp_path / "x")]
    if NO_NAMESPACES is None:  # forbid user namespaces to the child: its unshare(2) fails
        if shutil.which("unshare") is None:
            pytest.skip("needs util-linux unshare(1) to take namespaces away")
        command = ["unshare", "--user", "--map-root-user", "sh", "-c",
                   "echo 0 > /proc/sys/user/max_user_namespaces && exec \"$@\"", "-",
                   *command]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Linux namespaces are unavailable" in out and out.count("isolation is weaker") == 1
    assert "auto audit-hook" in out
    assert "sandbox: writing outside the working directory" in out and not (tmp_path / "x").exists()
    assert "strict error" in out


def test_pass_at_k_and_truncation(problems):
    assert truncate_completion("    return 1\ndef other():\n    pass") == "    return 1"
    assert pass_at_k([10, 10], [10, 0], 1) == pytest.approx(0.5)
    assert pass_at_k([5], [1], 5) == pytest.approx(1.0)
    problem_ids = ["HumanEval/2", "HumanEval/3"]
    samples = {
        "HumanEval/2": [problems["HumanEval/2"]["canonical_solution"], "    return None\n"],
        "HumanEval/3": ["    return True\n", "    return True\n"],
    }
    scores = evaluate_completions({k: problems[k] for k in problem_ids}, samples, ks=(1, 2))
    assert scores == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}


def test_lm_eval_hook_scores_pass_at_1_and_10(problems):
    from megatron_dlm.eval.humaneval import process_results

    problem = problems["HumanEval/4"]
    samples = [problem["canonical_solution"]] + ["    return 0.0\n"] * 9
    scores = process_results(problem, samples)
    assert scores == {"pass@1": pytest.approx(0.1), "pass@10": pytest.approx(1.0)}
    assert process_results(problem, samples[:2]) == {"pass@1": pytest.approx(0.5)}


def test_offline_task_configs_load_in_lm_eval_with_lm_evals_humaneval_settings(tmp_path):
    import importlib.util

    from lm_eval.tasks import TaskManager

    from megatron_dlm.eval.humaneval import lm_eval_task_settings
    from megatron_dlm.eval.tasks import TASKS, write_task_configs

    manager = TaskManager(include_path=str(write_task_configs(tmp_path)), include_defaults=False)
    tasks = manager.load_task_or_group(list(TASKS))
    assert set(tasks) == set(TASKS)
    assert len(tasks["humaneval_offline_pass10"].eval_docs) == 164
    greedy, sampled = (tasks[t].config for t in ("humaneval_offline", "humaneval_offline_pass10"))
    lm_eval, lm_eval_64 = lm_eval_task_settings("humaneval"), lm_eval_task_settings("humaneval_64")
    assert greedy.generation_kwargs == lm_eval["generation_kwargs"]
    assert greedy.generation_kwargs["until"] == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
    assert greedy.doc_to_text == lm_eval["doc_to_text"] and greedy.repeats == lm_eval["repeats"]
    assert [m["metric"] for m in greedy.metric_list] == ["pass@1"]
    assert sampled.generation_kwargs == lm_eval_64["generation_kwargs"] and sampled.repeats == 20
    assert [m["metric"] for m in sampled.metric_list] == ["pass@1", "pass@10"]
    # The generated hook cuts completions at lm-eval's stop strings ("\nif" among them).
    spec = importlib.util.spec_from_file_location("hooks", tmp_path / "megatron_dlm_task_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    problem = load_problems()["HumanEval/4"]
    tail = "\nif True:\n    raise SystemExit(1)\n"  # cut off at "\nif"
    assert hooks.humaneval_offline_process_results(
        problem, [problem["canonical_solution"] + tail]
    ) == {"pass@1": 1.0}
