"""The in-namespace half of the sandbox (megatron_dlm/eval/sandbox.py): stdlib only, run as

    python -I -S -B sandbox_init.py STATUS_FD HOST_PID   < marshal-encoded request

and never imported. It forks into four processes with one job each:

* the **launcher** stays in the host's namespaces: it writes the uid/gid maps of
* the **unsharer**, which calls ``unshare(2)`` for new user, mount, PID, network, IPC, UTS and
  cgroup namespaces and forks
* **init**, PID 1 of the new PID namespace. It builds a root of its own: a tmpfs with read-only
  bind mounts of the system and Python directories (and the request's extra paths), a few
  device nodes, a fresh ``/proc`` with ``/proc/sys`` read-only, a size-limited tmpfs
  ``/sandbox`` as the only writable place; lowers the IPC namespace's SysV limits and forbids
  nested user namespaces; ``pivot_root``\\ s into it and detaches the host's tree; starts a new
  session keyring; then forks the program and reaps until it exits. When init exits, the
  kernel kills every process left in the namespace; each of these processes dies with its
  parent (``PR_SET_PDEATHSIG``).
* the **program** drops every capability for good (capset, an empty bounding set,
  ``SECBIT_NOROOT`` locked), sets ``PR_SET_NO_NEW_PRIVS`` and the rlimits, and runs the
  program's source as ``__main__`` in this same interpreter (no second interpreter start).

STATUS_FD carries ``note <text>`` lines (hardening that could not be applied here), then one of
``exit <code>``, ``signal <number>`` or ``setup-error <text>``. The program never holds it.
"""

from __future__ import annotations

import _signal  # signal without its enum wrappers, which cost 4 ms at every start
import builtins
import ctypes
import marshal
import os
import resource
import sys

CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP = 1, 4, 24
PR_SET_SECUREBITS, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 28, 38, 47, 4
# SECBIT_NOROOT, NO_SETUID_FIXUP, KEEP_CAPS and NO_CAP_AMBIENT_RAISE, each with its lock bit
# (KEEP_CAPS itself off): root in the namespace gains no capabilities at exec, ever again.
SECUREBITS = 0b11101111
LINUX_CAPABILITY_VERSION_3 = 0x20080522
KEYCTL_JOIN_SESSION_KEYRING = 1
DEVICES = ("null", "zero", "full", "random", "urandom")
WORKDIR = "/sandbox"  # the only writable place: cwd, $HOME, $TMPDIR
PROGRAM = WORKDIR + "/program.py"

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
_libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4


class _ProgramReady(Exception):
    """Raised in the program's process to leave the setup code's frames before running it."""


def _call(name: str, *args) -> None:
    if getattr(_libc, name)(*args) != 0:
        err = ctypes.get_errno()
        shown = ", ".join(a.decode() for a in args if isinstance(a, bytes))
        raise OSError(err, f"{name}({shown}): {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None) -> None:
    enc = [os.fsencode(x) if x is not None else None for x in (source, target, fstype, data)]
    _call("mount", enc[0], enc[1], enc[2], flags, enc[3])


def _prctl(option: int, arg: int = 0) -> None:
    _call("prctl", option, arg, 0, 0, 0)


def _status(fd: int, line: str) -> None:
    os.write(fd, (line.replace("\n", " ") + "\n").encode())


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _die_with_parent(parent: int) -> None:
    _prctl(PR_SET_PDEATHSIG, _signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def launch(status_fd: int, host_pid: int) -> dict:
    """Launcher: fork the unsharer, give it its uid/gid maps, wait for it.

    Returns only in the program's process, with the request to run.
    """
    _die_with_parent(host_pid)
    request = marshal.loads(_read_all(0))
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    launcher = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(to_child_w)
        os.close(from_child_r)
        _die_with_parent(launcher)
        return _unsharer(request, status_fd, to_child_r, from_child_w)
    os.close(to_child_r)
    os.close(from_child_w)
    said = os.read(from_child_r, 4096).decode(errors="replace")
    if said == "unshared":
        try:
            _write_id_maps(child, request["outer_uid"], request["outer_gid"])
            os.write(to_child_w, b"go")
        except OSError as exc:
            _status(status_fd, f"setup-error writing the uid/gid maps: {exc}")
    else:
        _status(status_fd, f"setup-error {said or 'the unsharer died'}")
    os.close(to_child_w)
    os.waitpid(child, 0)
    os._exit(0)


def _write_id_maps(pid: int, uid: int, gid: int) -> None:
    """Namespace root = ``uid``/``gid`` outside: our own ids, or nobody's when we are root."""
    if os.geteuid() != 0:  # unprivileged: one may map one's own ids only, without setgroups
        with open(f"/proc/{pid}/setgroups", "w") as f:
            f.write("deny")
    for name, outer in (("uid_map", uid), ("gid_map", gid)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 {outer} 1\n")


def _unsharer(request: dict, status_fd: int, go_fd: int, said_fd: int) -> dict:
    try:
        _call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET
              | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)  # fmt: skip
    except OSError as exc:
        os.write(said_fd, str(exc).encode())
        os._exit(1)
    os.write(said_fd, b"unshared")
    os.close(said_fd)
    if os.read(go_fd, 16) != b"go":  # the launcher could not write our maps
        os._exit(1)
    os.close(go_fd)
    init = os.fork()
    if init == 0:
        try:
            _init(request, status_fd)
        except _ProgramReady:
            return request
        except BaseException as exc:  # reported to the host, never raised
            _status(status_fd, f"setup-error {type(exc).__name__}: {exc}")
        os._exit(1)
    os.waitpid(init, 0)
    os._exit(0)


def _init(request: dict, status_fd: int) -> None:
    """PID 1: build the root, run the program, report how it ended."""
    _prctl(PR_SET_PDEATHSIG, _signal.SIGKILL)  # getppid() is 0 here: our parent is outside
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # as PID 1: the program cannot signal us
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates to the host
    # Resolve every source while we still have the host's credentials (as root, paths under a
    # 0700 /root stay reachable), then become the namespace's root, which the launcher mapped
    # to an unprivileged uid: files we create belong to it, and it never acts as host root.
    sources = _open_sources([*request["binds"], *(f"/dev/{d}" for d in DEVICES)])
    os.setresgid(0, 0, 0)
    if request["host_root"]:  # else setgroups is denied in this namespace
        os.setgroups([])  # the supplementary groups root came with
    os.setresuid(0, 0, 0)
    _prctl(PR_SET_DUMPABLE, 0)  # the program, same uid, may not ptrace us nor open our fds
    notes: list[str] = []
    root = _build_root(request, sources, notes)
    for note in notes:
        _status(status_fd, f"note {note}")
    os.chdir(root)
    _call("pivot_root", b".", b".")
    _call("umount2", b".", MNT_DETACH)  # the host's tree is gone from this namespace
    os.chdir("/")
    for fd, _ in sources.values():
        if fd >= 0:
            os.close(fd)
    _libc.sethostname(b"sandbox", 7)
    _new_session_keyring(notes_fd=status_fd)
    program = os.fork()
    if program == 0:
        try:
            _confine(request, status_fd)
        except BaseException as exc:
            _status(status_fd, f"setup-error confining the program: {type(exc).__name__}: {exc}")
            os._exit(1)
        raise _ProgramReady
    while True:  # reap the orphans re-parented to us until the program itself ends
        pid, status = os.wait()
        if pid == program:
            break
    if os.WIFSIGNALED(status):
        _status(status_fd, f"signal {os.WTERMSIG(status)}")
    else:
        _status(status_fd, f"exit {os.waitstatus_to_exitcode(status)}")
    os._exit(0)


def _new_session_keyring(notes_fd: int) -> None:
    """Leave the host's session keyring (kernel keyrings have no namespace of their own)."""
    keyctl = {"x86_64": 250, "aarch64": 219, "riscv64": 219}.get(os.uname().machine)
    if keyctl is None or _libc.syscall(keyctl, KEYCTL_JOIN_SESSION_KEYRING, None) < 0:
        _status(notes_fd, "note the host's session keyring stays reachable")


def _open_sources(paths: list[str]) -> dict[str, tuple[int, str | None]]:
    """path -> (O_PATH fd, or -1 for a symlink; the symlink's target)."""
    sources: dict[str, tuple[int, str | None]] = {}
    for path in paths:
        if os.path.islink(path):
            sources[path] = (-1, os.readlink(path))
        elif os.path.exists(path):
            sources[path] = (os.open(path, os.O_PATH | os.O_CLOEXEC), None)
    return sources


def _build_root(request: dict, sources: dict, notes: list[str]) -> str:
    root = "/tmp"  # only a mount point: the sources are already held open
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=0755")
    work = root + WORKDIR
    os.mkdir(work)
    disk = request["disk"]
    _mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           f"size={disk['bytes']},nr_inodes={disk['inodes']},mode=0700")  # fmt: skip
    for path, (fd, link) in sources.items():
        target = root + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if link is not None:
            os.symlink(link, target)
            continue
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.mkdir(target, 0o755)
        else:
            os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
    os.makedirs(root + "/dev", mode=0o755, exist_ok=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{root}/dev/{name}")
    proc = root + "/proc"
    os.mkdir(proc, 0o555)
    try:
        _mount("proc", proc, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError as exc:  # e.g. in a container that masks parts of the host's /proc
        proc = "/proc"
        notes.append(f"no /proc inside the sandbox ({exc.strerror})")
    _limit_ipc_and_userns(proc, request["limits"]["memory"], notes)
    if proc != "/proc":
        _mount(proc + "/sys", proc + "/sys", None, MS_BIND | MS_REC)
    with open(root + PROGRAM, "w", encoding="utf-8") as f:
        f.write(request["program"])
    _make_readonly(root, keep_writable={work, root + "/proc"})
    return root


def _limit_ipc_and_userns(proc: str, memory: int, notes: list[str]) -> None:
    """SysV shared memory lives outside any process's address space, so RLIMIT_AS does not bound
    it: cap this IPC namespace's segments at the memory limit, freed when their last user
    detaches. No nested user namespaces: no way to regain capabilities over a copy of our
    mounts."""
    settings = {
        "kernel/shmmax": memory,
        "kernel/shmall": memory // os.sysconf("SC_PAGE_SIZE"),
        "kernel/shmmni": 16,
        "kernel/shm_rmid_forced": 1,
        "kernel/msgmni": 16,
        "user/max_user_namespaces": 0,
    }
    for key, value in settings.items():
        try:
            with open(f"{proc}/sys/{key}", "w") as f:
                f.write(str(value))
        except OSError as exc:
            notes.append(f"could not set {key.replace('/', '.')} ({exc.strerror})")


def _unescape(field: str) -> str:
    r"""A mountinfo path: ``\040`` for a space and so on."""
    parts = field.split("\\")
    return parts[0] + "".join(chr(int(p[:3], 8)) + p[3:] for p in parts[1:])


def _make_readonly(root: str, keep_writable: set[str]) -> None:
    """Remount our root tmpfs and every mount on it read-only, keeping each one's locked flags.

    The host's own mounts under the same mount point (covered by ours) are left alone.
    """
    entries = []  # (mount id, parent id, mount point), in mount order
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            entries.append((fields[0], fields[1], _unescape(fields[4])))
    ours = {[e for e in entries if e[2] == root][-1][0]}  # our tmpfs: the last one there
    for mount_id, parent, _ in entries:
        if parent in ours:
            ours.add(mount_id)
    points = {point for mount_id, _, point in entries if mount_id in ours}
    for point in sorted(points - keep_writable, key=len, reverse=True):  # the root tmpfs last
        kept = os.statvfs(point).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | kept)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]


def _confine(request: dict, status_fd: int) -> None:
    """In the program's process: no capabilities, no new privileges, the rlimits, stdin empty."""
    limits = request["limits"]
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)  # init's SIG_DFL: not for us
    devnull = os.open("/dev/null", os.O_RDONLY)
    os.dup2(devnull, 0)
    os.closerange(3, status_fd)
    os.closerange(status_fd + 1, os.sysconf("SC_OPEN_MAX"))
    _prctl(PR_SET_DUMPABLE, 1)  # as any process (init, which it cannot touch, is not)
    _prctl(PR_SET_SECUREBITS, SECUREBITS)
    for cap in range(64):
        try:
            _prctl(PR_CAPBSET_DROP, cap)
        except OSError:  # EINVAL past the kernel's last capability
            break
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    _call("capset", ctypes.byref(_CapHeader(LINUX_CAPABILITY_VERSION_3, 0)),
          (_CapData * 2)())  # fmt: skip
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    for name, soft, hard in (
        ("RLIMIT_AS", limits["memory"], limits["memory"]),
        ("RLIMIT_CPU", limits["cpu"], limits["cpu"] + 1),  # SIGXCPU first, then SIGKILL
        ("RLIMIT_FSIZE", limits["fsize"], limits["fsize"]),
        ("RLIMIT_NPROC", limits["nproc"], limits["nproc"]),
        ("RLIMIT_NOFILE", limits["nofile"], limits["nofile"]),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_MSGQUEUE", 0, 0),
    ):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    os.chdir(WORKDIR)
    os.environ.clear()
    os.environ.update(request["env"])
    os.close(status_fd)  # last: the program must not be able to write a status of its own


def _run_as_main(path: str) -> None:
    """Run ``path`` as ``python path`` would: a fresh ``__main__``, its own ``sys.argv``."""
    with open(path, encoding="utf-8") as f:
        code = compile(f.read(), path, "exec", dont_inherit=True)
    main = type(sys)("__main__")
    main.__file__, main.__builtins__ = path, builtins
    sys.modules["__main__"], sys.argv = main, [path]
    try:
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # the traceback python would print: from the program's frame
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != path:
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        sys.exit(1)


if __name__ == "__main__":
    launch(int(sys.argv[1]), int(sys.argv[2]))
    _run_as_main(PROGRAM)
