"""The sandbox every child starts behind: no network (below Python too), MNN's tooling blocked, a memory cap, death
with the runner, a home of its own; and children started without a fork in the parent."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mnn_parity import sandbox
from mnn_parity.engines.host import EngineProcess, EngineSpec, WorkerPool
from mnn_parity.manifest.spec import Limits
from tests import onnx_models

# Reports what a child may do as JSON; never imports MNN.tools for real (that would pip-install if unguarded).
PROBE = r'''
import ctypes, errno, importlib.util, json, os, resource, socket, sys
found = {}
for name in ("MNN.tools", "aliyun"):
    try:
        found[name] = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found[name] = False
libc = ctypes.CDLL(None, use_errno=True)
raw = {}
for family in ("AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"):
    fd = libc.socket(getattr(socket, family), socket.SOCK_STREAM if family != "AF_NETLINK" else socket.SOCK_RAW, 0)
    raw[family] = "ok" if fd >= 0 else errno.errorcode[ctypes.get_errno()]
    if fd >= 0:
        os.close(fd)
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    tcp = "connected"
except OSError as error:
    tcp = f"refused: {error}"
print(json.dumps({"importable": found, "raw_socket": raw, "tcp": tcp, "argv": sys.argv[1:],
                  "rlimit_as": resource.getrlimit(resource.RLIMIT_AS)[0], "status": os.environ.get("MNN_PARITY_SANDBOX"),
                  "home": os.environ.get("HOME"), "tmpdir": os.environ.get("TMPDIR"),
                  "cache": os.environ.get("XDG_CACHE_HOME")}))
'''


@pytest.fixture
def server():
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], accepted
    stop.set()
    thread.join()
    listener.close()
    for conn in accepted:
        conn.close()


def probe(tmp_path: Path, argv: list[str], memory_mb: int = 2048) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = subprocess.run(sandbox.command(sys.executable, script, argv, memory_mb), capture_output=True, text=True,
                          env=sandbox.child_env(tmp_path / "scratch"), timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])   # importing MNN prints its CPU features first


def test_a_sandboxed_child_reaches_no_network_at_any_level(tmp_path: Path, server):
    port, accepted = server
    seen = probe(tmp_path, [str(port)])
    assert seen["tcp"].startswith("refused") and "Permission denied" in seen["tcp"]
    # Below Python's socket module, where ONNX Runtime's C++ telemetry lookups are made: every family refused.
    assert seen["raw_socket"] == {"AF_INET": "EACCES", "AF_INET6": "EACCES", "AF_UNIX": "EACCES",
                                  "AF_NETLINK": "EACCES"}
    assert "network blocked by seccomp" in seen["status"]
    time.sleep(0.3)
    assert accepted == []


def test_the_same_probe_outside_the_sandbox_does_connect(tmp_path: Path, server):
    """The control: the refusals above come from the sandbox, not from this machine."""
    port, accepted = server
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    seen = json.loads(subprocess.run([sys.executable, str(script), str(port)], capture_output=True, text=True,
                                     check=True, timeout=60).stdout.splitlines()[-1])
    assert seen["tcp"] == "connected" and seen["raw_socket"]["AF_INET"] == "ok"
    assert seen["importable"]["MNN.tools"] is True
    deadline = time.monotonic() + 5
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(accepted) == 1


def test_mnn_tools_is_unimportable_the_cap_applies_and_home_is_the_scratch(tmp_path: Path):
    seen = probe(tmp_path, ["9", "--flag"], memory_mb=1536)
    assert seen["importable"] == {"MNN.tools": False, "aliyun": False}
    assert seen["argv"] == ["9", "--flag"]
    assert seen["rlimit_as"] == 1536 * 1024 * 1024
    scratch = str(tmp_path / "scratch")
    assert seen["home"].startswith(scratch) and seen["tmpdir"].startswith(scratch)
    assert seen["cache"].startswith(scratch)


def test_where_seccomp_cannot_be_installed_the_fallback_is_said_and_python_sockets_refused(tmp_path: Path, server):
    """On a machine the filter does not know, the child still refuses Python's sockets and says it is weaker."""
    port, accepted = server
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    unknown_machine = ("import platform, runpy, sys\n"
                       "platform.machine = lambda: 'mips'\n"
                       f"sys.argv = [{sandbox.__file__!r}] + sys.argv[1:]\n"
                       f"runpy.run_path({sandbox.__file__!r}, run_name='__main__')\n")
    argv = [sys.executable, "-c", unknown_machine] + sandbox.command(sys.executable, script, [str(port)])[2:]
    done = subprocess.run(argv, capture_output=True, text=True, env=sandbox.child_env(tmp_path / "s"), timeout=60)
    seen = json.loads(done.stdout.splitlines()[-1])
    assert "network refused in Python only (no seccomp filter: KeyError: 'mips')" in seen["status"]
    assert f"{sandbox.NOTICE} " in done.stderr and "Python only" in done.stderr
    assert seen["tcp"].startswith("refused") and seen["raw_socket"]["AF_INET"] == "ok"   # honest: C is not covered
    assert accepted == []


def test_a_child_whose_parent_is_already_gone_never_runs_its_target(tmp_path: Path):
    marker = tmp_path / "ran"
    script = tmp_path / "target.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    argv = sandbox.command(sys.executable, script)
    argv[argv.index("--parent-pid") + 1] = "1"   # "my parent is init": the runner is gone
    assert subprocess.run(argv, timeout=60).returncode == 70
    assert not marker.exists()


RUNNER = r'''
import sys, time
from mnn_parity import sandbox
proc = sandbox.spawn(sandbox.command(sys.executable, sys.argv[1]))
print(proc.pid, flush=True)
time.sleep(600)
'''


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        if stat.rsplit(")", 1)[1].split()[0] == "Z":   # a zombie awaiting its (new) parent's wait: dead
            return True
        time.sleep(0.05)
    return False


def test_a_busy_child_dies_when_the_runner_is_sigkilled(tmp_path: Path):
    busy = tmp_path / "busy.py"
    busy.write_text("while True:\n    pass\n")
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    parent = subprocess.Popen([sys.executable, str(runner), str(busy)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert not _gone(child, 0.5)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert _gone(child, 10), "the child outlived the runner"
    finally:
        parent.stdout.close()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_a_child_started_from_a_thread_that_ends_lives_on(tmp_path: Path):
    """The parent-death signal follows the thread that forked: spawning from a short-lived thread must not kill."""
    sleeper = tmp_path / "sleep.py"
    sleeper.write_text("import time\nprint('ready', flush=True)\ntime.sleep(60)\n")
    started = []

    def start_and_end():   # the thread ends only once the child has set its parent-death signal
        proc = sandbox.spawn(sandbox.command(sys.executable, sleeper), stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline() == "ready\n"

    thread = threading.Thread(target=start_and_end)
    thread.start()
    thread.join()
    proc = started[0]
    try:
        time.sleep(1.0)
        assert proc.poll() is None
    finally:
        sandbox.kill_group(proc)
        proc.wait()
        proc.stdout.close()
        sandbox.forget(proc)


def test_children_start_without_a_fork_that_runs_fork_handlers(tmp_path: Path):
    """The hang: a `preexec_fn` makes subprocess fork and run the fork handlers in the parent (OpenBLAS's shut
    its thread pool down under a running np.dot). Python's own fork hooks run exactly when such a fork happens."""
    from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
    from mnn_parity.manifest.spec import ConvertFlags

    forks = []
    os.register_at_fork(before=lambda: forks.append("fork"))
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    assert convert(model, ConvertFlags(), ConverterEnv(Path(sys.executable), "3.6.1"), tmp_path / "cache").ok
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as engine:
        engine.infer({"x": np.ones((1, 3, 8, 8), np.float32)})
    assert forks == []
    subprocess.run([sys.executable, "-c", "pass"], preexec_fn=lambda: None, check=True)   # the control
    assert forks == ["fork"]


BLAS_RACE = r'''
import os, subprocess, sys, threading, time
import numpy as np
from mnn_parity import sandbox
a, m = np.random.rand(4_000_000).astype(np.float32), np.random.rand(300, 300)
dots = [0]

def spin():
    while True:
        np.dot(a, a); m @ m
        dots[0] += 1

threading.Thread(target=spin, daemon=True).start()
for _ in range(60):
    if sys.argv[1] == "preexec":
        subprocess.run(["/bin/true"], preexec_fn=lambda: None)
    else:
        proc = sandbox.spawn(["/bin/true"])
        proc.wait()
        sandbox.forget(proc)
before = dots[0]
time.sleep(1.0)
print("RUNNING" if dots[0] > before else "STALLED", flush=True)
os._exit(0)
'''


@pytest.mark.parametrize("how, expected", [
    ("sandbox", {"RUNNING"}),
    pytest.param("preexec", {"STALLED", "HUNG"}, marks=pytest.mark.slow),   # the control: the old way hangs
])
@pytest.mark.slow
def test_np_dot_keeps_running_while_children_start(tmp_path: Path, how, expected):
    """The hang itself: OpenBLAS's fork handler, run by a `preexec_fn` fork, stalls a concurrent np.dot or the
    whole process for good; children started through the sandbox leave it running."""
    script = tmp_path / "race.py"
    script.write_text(BLAS_RACE)
    # The control is a race: it may need more than one try to stall. The sandbox must keep running every time.
    outcomes = [_race(script, how)]
    while how == "preexec" and outcomes[-1] not in expected and len(outcomes) < 3:
        outcomes.append(_race(script, how))
    if how == "preexec":
        assert set(outcomes) & expected, outcomes
    else:
        assert set(outcomes) <= expected, outcomes


def _race(script: Path, how: str) -> str:
    # A threaded BLAS is the hang's premise: a variable left by another test (Dask's nanny sets them) would make
    # the control pass for the wrong reason
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                              "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")}
    proc = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True, env=env)
    try:
        return proc.communicate(timeout=30)[0].strip()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return "HUNG"


def test_workers_of_both_engines_run_sandboxed(tmp_path: Path):
    from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
    from mnn_parity.manifest.spec import ConvertFlags

    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    mnn_model = convert(model, ConvertFlags(), ConverterEnv(Path(sys.executable), "3.6.1"), tmp_path / "cache")
    for spec in (EngineSpec("onnxruntime", model, (), ("y",)), EngineSpec("mnn", mnn_model.mnn_model, ("x",), ("y",))):
        with EngineProcess(spec, Limits(memory_mb=3072)) as engine:
            status = Path(f"/proc/{engine.pid}/status").read_text()
            limits = Path(f"/proc/{engine.pid}/limits").read_text()
            environ = Path(f"/proc/{engine.pid}/environ").read_bytes().split(b"\0")
            assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
            assert str(3072 * 1024 * 1024) in next(line for line in limits.splitlines() if "address space" in line)
            home = next(v for v in environ if v.startswith(b"HOME=")).decode()[5:]
            assert home.startswith(engine._scratch.name)
            assert "network blocked by seccomp" in engine.sandbox and "MNN.tools blocked" in engine.sandbox


def test_an_onnxruntime_worker_writes_nothing_outside_its_scratch(tmp_path: Path, monkeypatch):
    """ONNX Runtime writes ~/.cache/Microsoft/... and $TMPDIR/.ses: both must land in the scratch and go with it."""
    import tempfile

    for name in ("home", "tmp", "parent-tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home/.cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "parent-tmp"))
    monkeypatch.delenv("CI", raising=False)     # ONNX Runtime's telemetry stays quiet under CI=true: make it write
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    with EngineProcess(EngineSpec("onnxruntime", model, (), ("y",))) as engine:
        engine.infer({"x": np.ones((1, 3, 8, 8), np.float32)})
        written = {p.name for p in Path(engine._scratch.name).rglob("*")}
    assert ".ses" in written and ".onnxruntime" in written      # ONNX Runtime did write: into the scratch
    assert list((tmp_path / "home").iterdir()) == [] and list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "parent-tmp").iterdir()) == []       # and the scratch went with the worker


def test_kill_all_children_kills_workers_of_every_pool(tmp_path: Path):
    model = onnx_models.conv_relu(tmp_path / "conv.onnx")
    pool = WorkerPool(Limits(timeout_s=30))
    worker = pool.take(EngineSpec("onnxruntime", model, (), ("y",)))
    try:
        assert sandbox.kill_all_children() >= 1
        worker._proc.wait(timeout=10)
        assert not worker.alive
    finally:
        pool.give_back(worker)
        pool.close()


STRACED = r'''
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
import numpy as np
from tests import onnx_models
from mnn_parity.conversion.mnnconvert import ConverterEnv, convert
from mnn_parity.engines.host import EngineProcess, EngineSpec
from mnn_parity.manifest.spec import ConvertFlags
work = Path(sys.argv[2])
model = onnx_models.conv_relu(work / "conv.onnx")
conversion = convert(model, ConvertFlags(), ConverterEnv(Path(sys.executable), "3.6.1"), work / "cache")
assert conversion.ok and not conversion.cached, conversion.reason
for spec in (EngineSpec("onnxruntime", model, (), ("y",)), EngineSpec("mnn", conversion.mnn_model, ("x",), ("y",))):
    with EngineProcess(spec) as engine:
        assert engine.infer({"x": np.ones((1, 3, 8, 8), np.float32)})[0]["y"].shape == (1, 4, 8, 8)
print("DONE", flush=True)
'''


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/bin/strace").exists(), reason="needs strace")
def test_a_conversion_and_both_engines_under_strace_make_no_connect_call(tmp_path: Path):
    script = tmp_path / "straced.py"
    script.write_text(STRACED)
    trace = tmp_path / "trace.txt"
    root = Path(sandbox.__file__).resolve().parent.parent
    done = subprocess.run(["/usr/bin/strace", "-f", "-qq", "-s", "4096", "-e", "trace=connect,socket,execve", "-o", str(trace),
                           sys.executable, str(script), str(root), str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-2000:]
    lines = trace.read_text().splitlines()
    # Three children ran behind the sandbox (converter, ONNX Runtime worker, MNN worker) and were traced;
    # `-s 4096` above keeps strace from cutting a long checkout path short of "sandbox.py".
    assert sum(1 for line in lines if "execve(" in line and "sandbox.py" in line) == 3
    assert [line for line in lines if "connect(" in line] == []
    assert all("EACCES" in line for line in lines if "socket(" in line)


def run_bpf(program: list, nr: int, arch: int) -> int:
    """A small interpreter for the four instructions the filter uses, over (nr, arch) seccomp data."""
    data = {0: nr, 4: arch}
    pc = accumulator = 0
    while True:
        code, jt, jf, k = program[pc]
        if code == 0x20:
            accumulator = data[k]
        elif code == 0x06:
            return k
        elif code in (0x15, 0x35):
            taken = accumulator == k if code == 0x15 else accumulator >= k
            pc += jt if taken else jf
        pc += 1


@pytest.mark.parametrize("machine, arch, socket_nr, other_arch", [
    ("x86_64", 0xC000003E, 41, 0x40000003),       # i386 entry on an x86-64 kernel
    ("aarch64", 0xC00000B7, 198, 0x40000028),     # 32-bit ARM entry on an arm64 kernel
])
def test_the_filter_refuses_socket_on_both_architectures(machine, arch, socket_nr, other_arch):
    program = sandbox.seccomp_program(machine)
    eacces, eperm, allow = 0x50000 | 13, 0x50000 | 1, 0x7FFF0000
    assert run_bpf(program, socket_nr, arch) == eacces
    assert run_bpf(program, 425, arch) == eacces              # io_uring_setup: sockets without socket()
    for harmless in (0, 1, 3, 42, 56, 57, 59, 63, 220, 221):  # read, write, close, connect-after-socket, clone...
        if harmless != socket_nr:
            assert run_bpf(program, harmless, arch) == allow
    assert run_bpf(program, socket_nr, other_arch) == eperm  # another ABI would dodge the numbers above
    if machine == "x86_64":
        assert run_bpf(program, 0x40000000 | 41, arch) == eperm   # x32
