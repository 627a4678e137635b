"""The first code every child of the runner runs: limits and guards, then the real target (engine worker, converter).

    python sandbox.py --memory-mb N --parent-pid PID -- TARGET [ARGS...]

Standard library only, because it runs under any interpreter, including an `--mnn VERSION` venv that holds nothing
but MNN and numpy. The limits are applied here, in the child, rather than by a `preexec_fn` in the parent: a
`preexec_fn` makes `subprocess` fork (not vfork), which runs OpenBLAS's fork handler in the parent, and that handler
tore the BLAS thread pool down under an `np.dot` running in another thread of the runner: `run` hung.

In the child, in this order:
- parent-death signal: SIGKILL when the runner dies, even by SIGKILL; otherwise a busy worker runs on under PID 1;
- RLIMIT_AS, the memory cap (engines and converters can eat tens of GiB);
- MNN's Python tooling and its logging SDK made unimportable: importing them pip-installs and posts telemetry;
- no network: a seccomp filter makes socket() fail for every address family, because ONNX Runtime's telemetry
  lookups come from C++, below Python's socket module. Where seccomp cannot be installed, Python's sockets are
  refused instead and the fallback is said on stderr and in $MNN_PARITY_SANDBOX (the worker's reply carries it).

The parent's half (`command`, `child_env`, `spawn`, `kill_all_children`, `describe_exit`) lives here too, so the
two sides of the command line cannot drift apart.
"""
import os
import sys

if __name__ == "__main__":
    # A script's own folder heads sys.path; here that is the runner package, whose modules must not shadow any
    # the target imports. `os` and `sys` are built in, so nothing was looked up there yet.
    _HERE = os.path.realpath(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:] = [p for p in sys.path if os.path.realpath(os.path.abspath(p or os.curdir)) != _HERE]

import errno
import signal
import threading

STATUS_VARIABLE = "MNN_PARITY_SANDBOX"
SECCOMP_ON = "network blocked by seccomp"
NOTICE = "mnn-parity sandbox:"
BLOCKED_MODULES = ("MNN.tools", "MNN.tools.utils", "MNN.tools.utils.log", "aliyun", "aliyun.log")
MEMORY_WORDS = ("bad_alloc", "MemoryError", "Cannot allocate memory", "out of memory", "Alloc buffer error")

_PR_SET_PDEATHSIG, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS = 1, 22, 38
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW, _RET_ERRNO = 0x7FFF0000, 0x00050000
_LD_ABS_W, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_X32_BIT = 0x40000000
# machine -> (AUDIT_ARCH, socket, io_uring_setup, x32 syscalls share the arch). io_uring can open sockets
# without the socket() syscall, so it goes too; nothing the children run uses it.
_ABIS = {
    "x86_64": (0xC000003E, 41, 425, True),
    "amd64": (0xC000003E, 41, 425, True),
    "aarch64": (0xC00000B7, 198, 425, False),
    "arm64": (0xC00000B7, 198, 425, False),
}


# ------------------------------------------------------------------------------------------------- child side
def seccomp_program(machine: str) -> list:
    """The BPF filter as (code, jt, jf, k) rows: socket() and io_uring_setup() fail with EACCES; a syscall made
    through another ABI (x32, or 32-bit entry on a 64-bit kernel) fails with EPERM, since it would dodge the
    numbers checked here."""
    arch, nr_socket, nr_uring, x32 = _ABIS[machine]
    rows = [(_LD_ABS_W, None, None, 4), (_JEQ_K, None, "foreign", arch), (_LD_ABS_W, None, None, 0)]
    if x32:
        rows.append((_JGE_K, "foreign", None, _X32_BIT))
    rows += [(_JEQ_K, "network", None, nr_socket), (_JEQ_K, "network", None, nr_uring), (_RET_K, None, None, _RET_ALLOW)]
    labels = {"network": len(rows), "foreign": len(rows) + 1}
    rows += [(_RET_K, None, None, _RET_ERRNO | errno.EACCES), (_RET_K, None, None, _RET_ERRNO | errno.EPERM)]
    return [(code, labels[jt] - pc - 1 if jt else 0, labels[jf] - pc - 1 if jf else 0, k)
            for pc, (code, jt, jf, k) in enumerate(rows)]


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _prctl(libc, ctypes, option: int, *args) -> None:
    values = [ctypes.c_ulong(a) if isinstance(a, int) else a for a in args] + [ctypes.c_ulong(0)] * (4 - len(args))
    if libc.prctl(ctypes.c_int(option), *values) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def install_seccomp() -> None:
    """Raise OSError (or KeyError for an unknown machine) when the filter cannot be installed."""
    import platform

    ctypes, libc = _libc()
    rows = seccomp_program(platform.machine().lower())

    class SockFilter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                    ("k", ctypes.c_uint32)]

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

    table = (SockFilter * len(rows))(*[SockFilter(*row) for row in rows])
    program = SockFprog(len(rows), table)
    # Without no_new_privs an unprivileged process may not install a filter.
    _prctl(libc, ctypes, _PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, ctypes, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(program))


def _refuse_python_sockets() -> None:
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "mnn-parity: a child of the runner may not use the network")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse


def block_network() -> str:
    try:
        install_seccomp()
        return SECCOMP_ON
    except (OSError, KeyError, AttributeError) as error:
        _refuse_python_sockets()
        return f"network refused in Python only (no seccomp filter: {type(error).__name__}: {error})"


def die_with_parent(parent_pid: int) -> str:
    try:
        ctypes, libc = _libc()
        _prctl(libc, ctypes, _PR_SET_PDEATHSIG, int(signal.SIGKILL))
    except (OSError, AttributeError) as error:
        return f"no parent-death signal ({error})"
    if parent_pid and os.getppid() != parent_pid:
        os._exit(70)   # the parent died before the signal was set: nobody is left to serve
    return "dies with its parent"


def cap_memory(memory_mb: int) -> str:
    if memory_mb <= 0:
        return "no memory cap"
    import resource

    cap = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return f"address space capped at {memory_mb} MiB"


def block_modules() -> None:
    for name in BLOCKED_MODULES:
        sys.modules[name] = None   # `import` of a None entry raises ImportError without searching


def parse(argv: list) -> tuple:
    options = {"--memory-mb": 0, "--parent-pid": 0}
    while argv and argv[0] != "--":
        if argv[0] not in options or len(argv) < 2:
            raise SystemExit(f"{NOTICE} usage: sandbox.py --memory-mb N --parent-pid PID -- TARGET [ARGS...]")
        options[argv[0]] = int(argv[1])
        argv = argv[2:]
    if len(argv) < 2:
        raise SystemExit(f"{NOTICE} no target after --")
    return options["--memory-mb"], options["--parent-pid"], argv[1], argv[2:]


def main(argv: list) -> None:
    memory_mb, parent_pid, target, args = parse(argv)
    parent, memory = die_with_parent(parent_pid), cap_memory(memory_mb)
    block_modules()
    network = block_network()
    os.environ[STATUS_VARIABLE] = "; ".join((parent, memory, network, "MNN.tools blocked"))
    if network != SECCOMP_ON or parent.startswith("no "):
        # A weaker guard is said where a user reads: the worker's stderr log, the converter's log.
        print(f"{NOTICE} {os.environ[STATUS_VARIABLE]}", file=sys.stderr, flush=True)
    import runpy

    sys.argv = [target, *args]
    runpy.run_path(target, run_name="__main__")


# ------------------------------------------------------------------------------------------------ parent side
_SPAWNER = None
_LIVE: dict = {}          # Popen -> kind
_LOCK = threading.Lock()


def command(python, target, args=(), memory_mb: int = 0) -> list:
    """The argv that runs `target` (a Python file) under `python` behind this sandbox."""
    return [str(python), os.path.realpath(__file__), "--memory-mb", str(int(memory_mb or 0)),
            "--parent-pid", str(os.getpid()), "--", str(target), *[str(a) for a in args]]


def child_env(scratch, base=None) -> dict:
    """The child's environment, with its home, temp and cache folders inside `scratch`, which the parent owns and
    removes: ONNX Runtime writes ~/.cache/Microsoft/... and $TMPDIR/.ses, and nothing may land outside."""
    from pathlib import Path

    env = dict(os.environ if base is None else base)
    home = Path(scratch) / "home"
    places = {"HOME": home, "TMPDIR": Path(scratch) / "tmp", "XDG_CACHE_HOME": home / ".cache",
              "XDG_CONFIG_HOME": home / ".config", "XDG_DATA_HOME": home / ".local/share",
              "XDG_STATE_HOME": home / ".local/state"}
    for name, place in places.items():
        env[name] = str(place)
    # only these two made here: the XDG folders lie inside HOME, for whoever uses one to create (a folder costs
    # ~0.1 ms to make and to remove on this filesystem, and a conformance run starts a hundred workers)
    home.mkdir(parents=True, exist_ok=True)
    places["TMPDIR"].mkdir(exist_ok=True)
    return env


def spawn(argv: list, kind: str = "child", **popen_kwargs):
    """Start a child in its own session, registered under `kind` for `kill_all_children`.

    Every child is started from one long-lived thread: the parent-death signal fires when the *thread* that
    forked the child ends, and a short-lived worker thread of the caller would take its children with it."""
    global _SPAWNER
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    with _LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnn-parity-spawn")
        spawner = _SPAWNER
        for finished in [p for p in _LIVE if p.returncode is not None]:
            del _LIVE[finished]
    popen_kwargs.setdefault("close_fds", True)
    proc = spawner.submit(subprocess.Popen, argv, start_new_session=True, **popen_kwargs).result()
    with _LOCK:
        _LIVE[proc] = kind
    return proc


def forget(proc) -> None:
    with _LOCK:
        _LIVE.pop(proc, None)


def kill_group(proc) -> None:
    """SIGKILL the child and everything it started (its own session and process group)."""
    if proc.returncode is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all_children(kind=None) -> int:
    """Kill every live child started through `spawn` (of one `kind` if given): for Ctrl-C. Returns how many were
    still registered; their owners see them die (an engine crash, a converter killed by SIGKILL)."""
    with _LOCK:
        live = [p for p, k in _LIVE.items() if p.returncode is None and kind in (None, k)]
    for proc in live:
        kill_group(proc)
    return len(live)


def describe_exit(returncode: int, stderr_tail: str, limits) -> str:
    """Name how a child died, in the terms a user searches for. `limits` needs only `memory_mb`."""
    if any(word in stderr_tail for word in MEMORY_WORDS):
        return f"memory cap of {limits.memory_mb} MiB exceeded"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exited with status {returncode}"


if __name__ == "__main__":
    main(sys.argv[1:])
