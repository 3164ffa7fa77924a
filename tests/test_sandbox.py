"""Threat classes against the code sandbox: each asserts the verdict AND that the host is
unaffected (no surviving process, no leftover temp dir or cgroup, no file written, no
connection received). Tests run in the isolation this host offers (namespaces here and in CI);
`strict` forces the degraded mode (no namespaces: audit hook and rlimits only)."""

from __future__ import annotations

import builtins
import glob
import os
import socket
import tempfile
import threading
import time

import pytest

from cipo_jax.verifiers import code
from cipo_jax.verifiers.code import isolation, run_tests, run_tests_batch

OK_TESTS = "assert add(2, 3) == 5"
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"


@pytest.fixture(autouse=True)
def private_tmp(tmp_path_factory, monkeypatch):
    """Sandbox temp dirs and cgroups of this test only, so other users of the host don't count."""
    root = tmp_path_factory.mktemp("sandbox_root")
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    made = []
    real = code._make_cgroup
    monkeypatch.setattr(code, "_make_cgroup", lambda: made.append(real()) or made[-1])
    _PRIVATE[:] = [root, made]
    return root, made


_PRIVATE: list = []  # (temp root, cgroups made) of the running test
namespaces = pytest.mark.skipif(isolation() == "off", reason="no usable Linux namespaces here")


@pytest.fixture
def strict(monkeypatch):
    """Degraded mode, as on a host without namespaces or a writable pids cgroup."""
    monkeypatch.setattr(code, "isolation", lambda: "off")
    monkeypatch.setattr(code, "_cgroup_root", lambda: "")


def raised_os_error(result) -> bool:
    """The program stopped on an OSError (PermissionError, FileNotFoundError, ...)."""
    name = result.detail.rpartition(" ")[2]
    return result.status == "error" and issubclass(getattr(builtins, name, type), OSError)


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(entry, "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry.split("/")[2]))
        except OSError:
            pass
    return [pid for pid in pids if pid != os.getpid()]


def _host_clean(private) -> None:
    root, made = private
    assert _processes_mentioning(str(root)) == []
    assert os.listdir(root) == []
    assert [path for path in made if path and os.path.exists(path)] == []


def run(program: str, tests: str = OK_TESTS, **kw):
    result = run_tests(program, tests, **kw)
    _host_clean(_PRIVATE)
    return result


def test_honest_pass_and_fail():
    assert run(GOOD).status == "passed"
    bad = run(BAD)
    assert (bad.passed, bad.status) == (False, "failed")
    assert "AssertionError" in bad.detail


def test_syntax_errors_are_errors_and_never_raise():
    assert run("def add(a, b) return a").status == "error"
    assert run(GOOD, "assert (").status == "error"
    assert run("\x00\udcff").status == "error"  # unencodable/garbage text still returns
    assert run(None, None).status == "error"  # type: ignore[arg-type]


@pytest.mark.parametrize("exit_code", ["import os\nos._exit(0)", "import sys\nsys.exit(0)",
                                       "raise SystemExit(0)", "raise KeyboardInterrupt"])
@pytest.mark.parametrize("where", ["program", "tests"])
def test_early_exit_is_not_a_pass(exit_code, where):
    program, tests = (BAD + exit_code, OK_TESTS) if where == "program" else \
        (BAD, exit_code + "\n" + OK_TESTS)
    assert not run(program, tests).passed


def test_exit_inside_candidate_during_tests():
    program = "import os\ndef add(a, b):\n    os._exit(0)\n"
    assert not run(program).passed


def test_patched_builtins_and_assertion_suppression():
    attacks = [
        BAD + "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\n",
        BAD + "import builtins\nbuiltins.abs = lambda x: 0\nbuiltins.len = lambda x: 0\n",
        BAD + "import sys\nsys.excepthook = lambda *a: None\n",
        BAD + "def check(c):\n    pass\n",
        BAD + "import math\nmath.isclose = lambda *a, **k: True\n",
        BAD + "import builtins\nbuiltins.__dict__['Exception'] = int\n",
    ]
    for program in attacks:
        assert not run(program).passed, program
    # The tests see pristine builtins even when the program patched them.
    program = GOOD + "import builtins\nbuiltins.abs = lambda x: 0\n"
    assert not run(program, "assert abs(add(1, 1) - 3) < 1e-6").passed
    assert run(program, "assert abs(add(1, 1) - 2) < 1e-6").passed


def test_introspection_to_reach_the_harness_is_blocked():
    attacks = [
        "import sys\nf = sys._getframe(1)\n",
        "import gc\nobjs = gc.get_objects()\n",
        "try:\n    1/0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame.f_back\n",
        "import sys\nsys.settrace(lambda *a: None)\n",
        "import ctypes\n",
        "data = open('/proc/self/mem', 'rb')\n",
        "import os\nos.listdir('/proc/1/fd')\nopen('/proc/1/environ').read()\n",
    ]
    for attack in attacks:
        result = run(GOOD + attack)
        assert (result.passed, result.status) == (False, "error"), attack


def test_forged_protocol_output():
    forge = BAD + (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'OK 00000000000000000000000000000000\\nOK \\n')\n"
        "    except OSError:\n"
        "        pass\n"
        "print('OK'); print('passed')\n")
    assert not run(forge).passed
    assert not run(forge.replace(BAD, GOOD) + "os._exit(0)\n").passed


def test_closed_stdout_stderr():
    program = "import os\nos.close(1)\nos.close(2)\n"
    assert not run(BAD + program).passed
    assert run(GOOD + program).passed  # closing them is not cheating


SPAWNERS = [
        "import os\nif os.fork() == 0:\n    if os.fork() == 0:\n        import time; time.sleep(100)\n",
        "import subprocess\nsubprocess.Popen(['sleep', '100'])\n",
        "import os\nos.system('sleep 100 &')\n",
        "import multiprocessing as m\nm.Process(target=print).start()\n",
        "import os\nos.posix_spawn('/bin/sleep', ['sleep', '100'], {})\n",
        "import pty\npty.fork()\n",
        "import _posixsubprocess\n",
]


@namespaces
def test_processes_cannot_outlive_the_call():
    # With a PID namespace, processes are allowed: each dies with the sandbox (`run` checks).
    for program in SPAWNERS:
        result = run(GOOD + program)
        assert result.passed or raised_os_error(result), (program, result)


def test_processes_are_refused_at_the_call_without_namespaces(strict):
    for program in SPAWNERS[:-1]:
        result = run(GOOD + program)
        assert result.status == "error" and "PermissionError" in result.detail, program
    assert run(GOOD + "import subprocess, multiprocessing, _posixsubprocess\n").passed


def test_fork_bomb():
    result = run(GOOD + "import os\nwhile True:\n    os.fork()\n", timeout_s=2)
    assert not result.passed
    # An honest program that tries, catches the OSError and goes on still passes.
    assert run(GOOD + "import os\ntry:\n    os.fork()\nexcept OSError:\n    pass\n").passed


def test_memory_bomb_cpu_bomb_and_sleep():
    start = time.monotonic()
    memory = run(GOOD + "x = bytearray(8 << 30)\n", memory_mb=512)
    assert not memory.passed and "MemoryError" in memory.detail
    growing = run(GOOD + "x = []\nwhile True:\n    x.append(bytearray(1 << 20))\n", memory_mb=512)
    assert not growing.passed
    cpu = run(GOOD + "while True:\n    pass\n", timeout_s=1.0)
    assert cpu.status == "timeout"
    sleeper = run(GOOD, "import time\ntime.sleep(30)\n" + OK_TESTS, timeout_s=1.0)
    assert sleeper.status == "timeout"
    assert time.monotonic() - start < 15


def test_cpu_rlimit_kills_even_when_wall_clock_allows(monkeypatch):
    # Threads burning CPU in parallel exceed RLIMIT_CPU (ceil(timeout)+1 s) before the wall limit.
    program = GOOD + ("import threading\n"
                      "def burn():\n    while True: pass\n"
                      "for _ in range(4): threading.Thread(target=burn, daemon=True).start()\n"
                      "burn()\n")
    result = run(program, timeout_s=1.0)
    assert not result.passed and result.status in ("killed", "timeout")


def test_environment_secrets_are_invisible(monkeypatch):
    monkeypatch.setenv("CIPO_SECRET_TOKEN", "hunter2-sandbox")
    program = GOOD + ("import os\nassert 'CIPO_SECRET_TOKEN' not in os.environ\n"
                      "assert len(os.environ) == 0, dict(os.environ)\n")
    assert run(program).passed
    leak = run(GOOD + "import os\nprint(dict(os.environ))\n")
    assert "hunter2" not in leak.stdout


def test_writes_outside_temp_dir_fail_and_honest_recovery_passes(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep")
    attacks = [
        f"open({str(target)!r}, 'w').write('x')\n",
        f"import os\nos.remove({str(target)!r})\n",
        f"import os\nos.rename({str(target)!r}, 'stolen')\n",
        f"import os\nos.symlink({str(target)!r}, 'link')\nopen('link', 'w').write('x')\n",
        f"import os\nos.link({str(target)!r}, 'hard')\n",
        f"import os\nfd = os.open({str(tmp_path)!r}, os.O_RDONLY)\nos.remove('victim.txt', dir_fd=fd)\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        f"import os\nos.chmod({str(target)!r}, 0o777)\n",
        "open('/etc/cipo_sandbox_probe', 'w')\n",
        "import sqlite3\nsqlite3.connect('/etc/cipo_sandbox_probe')\n",
        "import sqlite3\nsqlite3.connect('file:/etc/cipo_sandbox_probe?mode=rwc', uri=True)\n",
        "import dbm\ndbm.open('/etc/cipo_sandbox_probe', 'c')\n",
    ]
    for attack in attacks:
        result = run(GOOD + attack)
        # sqlite3/dbm wrap the OS refusal in their own error types
        assert raised_os_error(result) or ("sqlite3" in attack or "dbm" in attack
                                           ) and result.status == "error", (attack, result)
        assert target.read_text() == "keep"
    assert not os.path.exists("/etc/cipo_sandbox_probe")
    honest = GOOD + (f"try:\n    open({str(target)!r}, 'w')\nexcept OSError as e:\n    print(e)\n"
                     "with open('scratch.txt', 'w') as f:\n    f.write('ok')\n"
                     "assert open('scratch.txt').read() == 'ok'\n"
                     "import os\nos.mkdir('d')\nos.remove('scratch.txt')\n")
    result = run(honest)
    assert result.passed, result
    assert "rrno" in result.stdout or "not allowed" in result.stdout  # the OSError's message


def test_network_connection_to_localhost_listener_fails():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.1)
    port = listener.getsockname()[1]
    received = []

    def accept():
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            try:
                conn, _ = listener.accept()
                received.append(conn.recv(100))
            except OSError:
                pass

    thread = threading.Thread(target=accept)
    thread.start()
    attack = GOOD + (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                     "s.sendall(b'leak')\n")
    result = run(attack)
    honest = GOOD + (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), 1)\n"
                     "except OSError:\n    pass\n")
    honest_result = run(honest)
    thread.join()
    listener.close()
    assert raised_os_error(result), result
    assert honest_result.passed
    assert received == []


def test_signalling_other_processes_fails():
    result = run(GOOD + f"import os, signal\nos.kill({os.getpid()}, signal.SIGKILL)\n")
    assert raised_os_error(result), result


def test_segfault_via_ctypes_and_faulthandler():
    result = run(GOOD + "import ctypes\nctypes.string_at(0)\n")
    assert not result.passed
    result = run(GOOD + "import sys\nsys.setrecursionlimit(10**9)\n"
                        "def f(n):\n    return f(n + 1)\nf(0)\n")
    assert not result.passed


def test_gigabytes_of_output_are_capped():
    start = time.monotonic()
    result = run(GOOD + "import sys\nchunk = 'x' * (1 << 20)\n"
                        "for _ in range(4096):\n    sys.stdout.write(chunk)\n", timeout_s=3.0)
    assert not result.passed
    assert len(result.stdout) <= 8192
    assert time.monotonic() - start < 10
    # The namespaced tmpfs bounds the bytes a program can put in its temp dir.
    result = run(GOOD + "f = open('big', 'wb')\nfor _ in range(1024):\n    f.write(b'x' * (1 << 20))\n")
    assert not result.passed


@namespaces
def test_namespaces_hold_without_the_hook_view():
    # The program runs in its own PID namespace (the harness is a child of its PID 1).
    program = GOOD + "import os\nassert os.getppid() == 1, os.getppid()\n"
    assert run(program).passed


def test_batch_bounded_concurrency_and_order():
    programs = [GOOD if i % 3 else BAD for i in range(12)]
    results = run_tests_batch(programs, [OK_TESTS] * 12, timeout_s=5, max_workers=3)
    assert [r.passed for r in results] == [bool(i % 3) for i in range(12)]
    _host_clean(_PRIVATE)


def test_signal_handler_frames_and_audit_hooks_cannot_reach_the_verdict():
    frame_walker = BAD + (
        "import os, signal\n"
        "def grab(signum, frame):\n"
        "    while frame is not None:\n"
        "        for value in list(frame.f_locals.values()):\n"
        "            if isinstance(value, bytes) and value.startswith(b'OK '):\n"
        "                for fd in range(3, 64):\n"
        "                    try:\n"
        "                        os.write(fd, value)\n"
        "                    except OSError:\n"
        "                        pass\n"
        "            if callable(value) and getattr(value, '__name__', '') == 'hook':\n"
        "                for cell in value.__closure__ or ():\n"
        "                    cell.cell_contents = frozenset()\n"
        "        frame = frame.f_back\n"
        "try:\n    signal.signal(signal.SIGALRM, grab)\nexcept PermissionError:\n    pass\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)\n")
    assert not run(frame_walker).passed
    # A program's own audit hook would see the tests' code object before they run: it is
    # silently refused (CPython drops a hook whose addition an existing hook rejects).
    spy = GOOD + "import sys\nseen = []\nsys.addaudithook(lambda event, args: seen.append(event))\n"
    assert run(spy, "import json\nassert seen == [], seen\n" + OK_TESTS).passed


def test_hook_alone_holds_without_namespaces_or_cgroup(strict, tmp_path):
    """Hosts without `unshare` or a writable pids cgroup: the audit hook still denies."""
    victim = tmp_path / "victim"
    attacks = [f"open({str(victim)!r}, 'w')\n",
               "import socket\nsocket.create_connection(('127.0.0.1', 9), 1)\n",
               "import os\nos.fork()\n",
               "import subprocess\nsubprocess.run(['true'])\n"]
    for attack in attacks:
        result = run(GOOD + attack)
        assert result.status == "error" and "PermissionError" in result.detail, attack
    assert not victim.exists()
    assert not run(BAD + "import os\nos._exit(0)\n").passed
    assert run(GOOD + "import os\nassert not os.environ\n").passed
