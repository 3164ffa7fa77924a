"""What the OS layers of the code sandbox give (issue: honest programs pass, no host secrets):
honest stdlib-heavy programs, warnings/logging/stderr, an __import__ wrapper and child processes
pass; the program runs as nobody in a view without host secrets; its children cannot read its
memory; the user-namespace path (non-root callers) holds the same; a missing layer is logged."""

from __future__ import annotations

import logging
import os
import sys

import pytest

from cipo_jax.verifiers import code
from cipo_jax.verifiers.code import isolation, run_tests
from tests.test_sandbox import GOOD, OK_TESTS, _processes_mentioning, private_tmp, run  # noqa: F401

namespaces = pytest.mark.skipif(isolation() == "off", reason="no usable Linux namespaces here")

STDLIB_HEAVY = '''
from dataclasses import dataclass, field
from decimal import Decimal, getcontext
from fractions import Fraction
from functools import lru_cache, reduce
import collections, heapq, itertools, json, re, statistics, typing, enum, inspect

@dataclass(order=True)
class Job:
    cost: Fraction
    name: str = field(compare=False)

class Color(enum.Enum):
    RED = 1

@lru_cache(maxsize=None)
def ways(n: int) -> int:
    return 1 if n < 2 else ways(n - 1) + ways(n - 2)

def add(a, b):
    jobs = [Job(Fraction(1, 3), "c"), Job(Fraction(1, 6), "a")]
    heapq.heapify(jobs)
    assert heapq.heappop(jobs).name == "a"
    getcontext().prec = 12
    assert Decimal(1) / Decimal(8) == Decimal("0.125")
    assert json.loads(json.dumps({"k": [1, 2]})) == {"k": [1, 2]}
    assert re.findall(r"\\d+", "a1b22") == ["1", "22"]
    assert list(itertools.accumulate(range(4))) == [0, 1, 3, 6]
    assert collections.Counter("abca").most_common(1) == [("a", 2)]
    assert ways(40) == 165580141 and statistics.mean([1, 2, 3]) == 2
    assert str(inspect.signature(ways.__wrapped__)) == "(n: int) -> int"
    return reduce(lambda x, y: x + y, [a, b])
'''


def test_stdlib_heavy_honest_program_passes():
    result = run(STDLIB_HEAVY)
    assert result.passed, result
    assert not run(STDLIB_HEAVY.replace("return reduce", "return 1 + reduce")).passed


def test_warnings_logging_and_stderr_do_not_fail_a_program():
    program = GOOD + ("import logging, sys, warnings\n"
                      "warnings.warn('old', DeprecationWarning)\nwarnings.warn('careful')\n"
                      "logging.warning('hello %s', 1)\nlogging.getLogger('x').error('boom')\n"
                      "print('to stderr', file=sys.stderr)\n")
    result = run(program)
    assert result.passed, result
    assert "careful" in result.stderr and "hello 1" in result.stderr and "to stderr" in result.stderr


def test_import_wrapper_is_transparent():
    program = ("import builtins\nseen = []\n_real = builtins.__import__\n"
               "def _wrapper(name, *args, **kwargs):\n    seen.append(name)\n"
               "    return _real(name, *args, **kwargs)\n"
               "builtins.__import__ = _wrapper\nimport json, heapq\nfrom collections import deque\n"
               + GOOD + "assert 'json' in seen\n")
    assert run(program).passed


@namespaces
def test_every_stdlib_module_imports():
    program = GOOD + (
        "import sys\nbad = []\n"
        "for name in sorted(sys.stdlib_module_names - {'antigravity', 'this', '__main__'}):\n"
        "    try:\n        __import__(name)\n"
        "    except ImportError:\n        pass  # not built here, or raw-memory access (ctypes)\n"
        "    except Exception as e:\n        bad.append((name, repr(e)))\n"
        "assert not bad, bad\n")
    result = run(program, timeout_s=30)
    assert result.passed, result


@namespaces
def test_subprocess_and_a_child_outliving_the_program():
    marker = f"cipo-sandbox-child-{os.getpid()}"
    program = GOOD + (
        "import subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-c', 'print(2 + 3)'], capture_output=True, text=True)\n"
        "assert out.stdout.strip() == '5', out\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n")
    result = run(program)
    assert result.passed, result
    assert _processes_mentioning(marker) == []  # killed with the sandbox


@namespaces
def test_no_host_secrets_visible(monkeypatch):
    monkeypatch.setenv("CIPO_SECRET_TOKEN", "hunter2-isolation")
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    program = GOOD + (
        "import glob, os\nfound = []\n"
        "for path in ['/etc/shadow', '/etc/gshadow'] + glob.glob('/proc/*/environ'):\n"
        "    try:\n        data = open(path, 'rb').read()\n"
        "    except OSError:\n        continue\n"
        "    if data:\n        found.append((path, data[:60]))\n"
        "print(found)\nassert found == [], found\n"
        f"assert not os.path.exists({project!r}) and not os.path.exists('/home')\n"
        "assert os.listdir('/root') == ['.pyenv'] or not os.path.exists('/root'), os.listdir('/root')\n"
        "assert os.getuid() == os.geteuid() == 65534 and os.getgid() == 65534, os.getuid()\n"
        "status = open('/proc/self/status').read()\n"
        "assert 'CapEff:\\t0000000000000000' in status and 'NoNewPrivs:\\t1' in status\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "assert len(pids) <= 3, pids  # PID 1 and the program: no host processes\n")
    result = run(program)
    assert result.passed, result
    assert "hunter2" not in result.stdout + result.stderr


def test_own_memory_is_out_of_reach():
    attacks = ["open('/proc/self/mem', 'rb')\n",
               "import os\nopen(f'/proc/{os.getpid()}/task/{os.getpid()}/mem', 'rb')\n",
               "import os\nfd = os.open('/proc/self', os.O_RDONLY)\nos.open('mem', os.O_RDONLY, dir_fd=fd)\n",
               "import ctypes\n"]
    for attack in attacks:
        result = run(GOOD + attack)
        assert result.status == "error", (attack, result)


@namespaces
def test_children_cannot_read_the_programs_memory():
    # A child interpreter has no audit hook; the program is not dumpable, so the kernel refuses.
    program = GOOD.replace("a + b", "a - b") + (
        "import subprocess, sys, os\n"
        "probe = ('import os, sys\\n'\n"
        "         'try:\\n    open(f\"/proc/{os.getppid()}/mem\", \"rb\"); print(\"READ\")\\n'\n"
        "         'except OSError as e:\\n    print(\"refused\", e.errno)\\n')\n"
        "out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True)\n"
        "print(out.stdout, out.stderr)\n")
    result = run(program)
    assert not result.passed and "refused" in result.stdout and "READ" not in result.stdout, result


@namespaces
def test_user_namespace_mode_holds_the_same(monkeypatch):
    """The path a non-root caller takes (exercised here whatever the caller is)."""
    monkeypatch.setattr(code, "isolation", lambda: "userns")
    marker = f"cipo-sandbox-userns-{os.getpid()}"
    program = GOOD + (
        "import os, subprocess, sys\n"
        "assert os.getuid() == 65534 and not os.path.exists('/etc/shadow')\n"
        "assert 'CapEff:\\t0000000000000000' in open('/proc/self/status').read()\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n")
    result = run(program)
    assert result.passed, result
    assert _processes_mentioning(marker) == []
    assert not run(GOOD.replace("a + b", "a - b")).passed
    assert not run(GOOD.replace("a + b", "a - b") + "import os\nos._exit(0)\n").passed


def test_missing_namespaces_are_logged_once_and_the_hook_holds(monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(code, "_executable", lambda name: "" if name == "unshare" else name)
    code.isolation.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="cipo_jax.verifiers.code"):
            assert code.isolation() == "off"
            assert code.isolation() == "off"
        warnings = [r.getMessage() for r in caplog.records if "namespaces" in r.getMessage()]
        assert len(warnings) == 1 and "no `unshare`" in warnings[0], warnings
        victim = tmp_path / "victim"
        result = run(GOOD + f"open({str(victim)!r}, 'w')\n")
        assert result.status == "error" and "PermissionError" in result.detail
        assert not victim.exists()
        assert run(GOOD + "import subprocess, logging\nlogging.warning('x')\n").passed
    finally:
        code.isolation.cache_clear()
