"""Run an untrusted program in a sandboxed subprocess and judge it; never raises.

`run_tests(program, tests)` executes `program`, then `tests` in the same namespace, and reports
`passed` iff every test statement completed without an exception within the limit (HumanEval
form). `run_io(program, cases)` runs the program once per (stdin, expected stdout) case and
compares its output (LiveCodeBench form), with one status per case.

Each run is a fresh `python -I -S -B` (stdlib only, empty environment). Layers, each holding on
its own (docs/verifiers.md has the threat model and the tests that show each):
1. Namespaces via `unshare` (PID, network, mount, IPC, UTS; plus a user namespace when the
   caller is not root): `sandbox_view.py` builds a minimal read-only root (interpreter prefix,
   /usr, a synthetic /etc, a few /dev nodes, its own /proc, a private tmpfs /tmp), pivots into
   it, and the program runs as nobody with no capabilities, `no_new_privs`, not dumpable.
   Every process of the sandbox dies with its PID 1.
2. A pids cgroup (v1 or v2, when writable) caps the process count per sandbox.
3. rlimits: CPU seconds, address space, file size, open files, no core.
4. An audit hook in the program's process (`sandbox_harness.py`) for what only it can do:
   keep the program away from the verdict (frames, tracing, gc, raw memory); without
   namespaces it also denies processes, sockets and writes outside the temp dir.
5. The parent: its own session, SIGKILL to the group at the deadline and at the end, a fresh
   temp dir removed afterwards, output capped by the file size limit, a nonce-authenticated
   verdict.
The layers found unusable on this host are named once in the log (`isolation()`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error", "killed")
CASE_STATUSES = ("pass", "wrong_answer", "runtime_error", "timeout", "memory")
HARNESS = str(Path(__file__).with_name("sandbox_harness.py"))
OUTPUT_LIMIT = 8192  # bytes of stdout/stderr kept in the result
FILE_LIMIT_MB = 16  # RLIMIT_FSIZE: caps stdout/stderr files and files the program writes
BOX_SIZE_MB = 64  # tmpfs size of the writable temp dir (namespace mode)
PIDS_MAX = 32
_UNSHARE = ["--pid", "--fork", "--kill-child", "--net", "--mount", "--ipc", "--uts",
            "--propagation", "private"]
# run_io: the overall status of a failed run is that of its first failing case
_CASE_TO_STATUS = {"wrong_answer": "failed", "runtime_error": "error", "timeout": "timeout",
                   "memory": "error"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeResult:
    passed: bool
    status: str  # one of STATUSES
    detail: str = ""  # which stage failed and the exception type, or the signal
    stdout: str = ""  # first OUTPUT_LIMIT bytes
    stderr: str = ""
    duration_s: float = 0.0
    cases: list[str] = field(default_factory=list)  # run_io: one of CASE_STATUSES per case


@dataclass(frozen=True)
class _Run:
    """What one sandbox run left behind, before any judgement."""
    verdict: str
    returncode: int | None
    timed_out: bool
    stdout: bytes
    stderr: str


def _executable(name: str) -> str:
    return shutil.which(name) or ""


@lru_cache(maxsize=1)
def isolation() -> str:
    """'root' (namespaces, setuid to nobody), 'userns' (namespaces inside a user namespace, for
    a non-root caller) or 'off' (audit hook and rlimits only). Probed once per process by
    running a trivial program; what is off is logged once."""
    candidates = ["root", "userns"] if os.geteuid() == 0 else ["userns"]
    failures = []
    if not _executable("unshare"):
        failures.append("no `unshare` executable")
    else:
        for mode in candidates:
            nonce = secrets.token_hex(16)
            run = _execute("x = 1\n", "assert x == 1\n", b"", "tests", 10.0, 256, mode, nonce)
            if _classify(run, nonce)[0] == "passed":
                if not _cgroup_root():
                    log.warning("code sandbox: no writable pids cgroup: the process count is "
                                "capped by RLIMIT_NPROC only (shared by all sandboxes of a uid)")
                return mode
            failures.append(f"{mode}: {run.stderr.strip()[-300:] or run.returncode}")
    log.warning("code sandbox: Linux namespaces unusable here (%s): no private filesystem view, "
                "no unprivileged user, no PID or network isolation; the audit hook denies "
                "processes, sockets and writes outside the temp dir instead, and the program "
                "can read host files", "; ".join(failures))
    return "off"


@lru_cache(maxsize=1)
def _cgroup_root() -> str:
    """A writable pids cgroup directory for per-run child groups, or '' when none is."""
    for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        base = os.path.join(root, "cipo_sandbox")
        try:
            os.makedirs(base, exist_ok=True)
            if os.path.exists(os.path.join(base, "pids.max")) or os.path.exists(
                    os.path.join(root, "pids.max")):
                probe = os.path.join(base, f"probe-{os.getpid()}")
                os.mkdir(probe)
                ok = os.path.exists(os.path.join(probe, "pids.max"))
                os.rmdir(probe)
                if ok:
                    return base
        except OSError:
            continue
    return ""


def _make_cgroup() -> str:
    root = _cgroup_root()
    if not root:
        return ""
    path = os.path.join(root, uuid.uuid4().hex)
    try:
        os.mkdir(path)
        Path(path, "pids.max").write_text(str(PIDS_MAX))
        return path
    except OSError:
        return ""


def _kill_cgroup(path: str) -> None:
    if not path:
        return
    for _ in range(50):  # a member may fork between the read and the kill: repeat until empty
        try:
            pids = [int(p) for p in Path(path, "cgroup.procs").read_text().split()]
        except OSError:
            break
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    for _ in range(100):
        try:
            os.rmdir(path)
            return
        except OSError:
            time.sleep(0.01)


def _read_head(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(limit)
    except OSError:
        return b""


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _execute(program: str, tests: str, stdin: bytes, mode: str, timeout_s: float,
             memory_mb: int, isolation_mode: str, nonce: str = "") -> _Run:
    """One sandbox run; the caller judges. Everything it creates on the host is gone after."""
    start = time.monotonic()
    nonce = nonce or secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="cipo_sandbox_"))
    box = work / "box"  # the writable dir without namespaces, else the new root's mount point
    box.mkdir(mode=0o700)
    cgroup = _make_cgroup()
    proc = None
    timed_out = False
    try:
        prog_b = program.encode("utf-8", "surrogatepass")
        tests_b = tests.encode("utf-8", "surrogatepass")
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err, \
                open(work / "verdict", "wb") as verdict:
            fields = dict(nonce=nonce, box=box, vfd=verdict.fileno(),
                          cpu_s=math.ceil(timeout_s) + 1, memory_mb=memory_mb,
                          file_mb=FILE_LIMIT_MB, box_mb=BOX_SIZE_MB, mode=mode,
                          isolation=isolation_mode, cgroup=cgroup, n_program=len(prog_b),
                          n_tests=len(tests_b), n_stdin=len(stdin))
            header = "\t".join(f"{k}={v}" for k, v in fields.items())
            payload = header.encode() + b"\n" + prog_b + tests_b + stdin
            python = os.path.realpath(sys.executable)
            if isolation_mode == "off":
                argv = [python, "-I", "-S", "-B", HARNESS, "program"]
            else:
                user = ["--user", "--map-root-user"] if isolation_mode == "userns" else []
                argv = [_executable("unshare")] + _UNSHARE + user + [
                    python, "-I", "-S", "-B", HARNESS, "init"]
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    pass_fds=(verdict.fileno(),), env={}, cwd=str(box),
                                    start_new_session=True, close_fds=True)
            remaining = max(0.05, timeout_s - (time.monotonic() - start))
            try:
                proc.communicate(payload, timeout=remaining)
            except subprocess.TimeoutExpired:
                timed_out = True
            except (BrokenPipeError, OSError):
                pass
    finally:
        if proc is not None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        _kill_cgroup(cgroup)
        run = _Run(_text(_read_head(work / "verdict", 4096)),
                   proc.returncode if proc else None, timed_out,
                   _read_head(work / "stdout", FILE_LIMIT_MB << 20),
                   _text(_read_head(work / "stderr", OUTPUT_LIMIT)))
        shutil.rmtree(work, ignore_errors=True)
    return run


def _classify(run: _Run, nonce: str) -> tuple[str, str]:
    for line in run.verdict.splitlines():
        if line == f"OK {nonce}":
            return "passed", ""
    for line in run.verdict.splitlines():
        if line.startswith("FAIL "):
            kind, _, exc = line[len("FAIL "):].partition(" ")
            stage = "program" if kind == "error" else "tests"
            return ("error" if kind == "error" else "failed"), f"{stage} raised {exc}".strip()
    if run.timed_out:
        return "timeout", "wall-clock limit"
    code = run.returncode
    if code is not None and (code < 0 or code > 128):
        sig = -code if code < 0 else code - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed", f"terminated by {name}"
    return "failed", f"exited with code {code} before the tests completed"


def _judged(program: str, tests: str, stdin: bytes, mode: str, timeout_s: float,
            memory_mb: int) -> tuple[str, str, _Run]:
    nonce = secrets.token_hex(16)
    run = _execute(program, tests, stdin, mode, timeout_s, memory_mb, isolation(), nonce)
    status, detail = _classify(run, nonce)
    return status, detail, run


def run_tests(program: str, tests: str, *, timeout_s: float = 5.0,
              memory_mb: int = 1024) -> CodeResult:
    """Run `program` then `tests` in the sandbox; `passed` iff the tests completed normally."""
    start = time.monotonic()
    try:
        if not isinstance(program, str) or not isinstance(tests, str):
            return CodeResult(False, "error", "program and tests must be str")
        status, detail, run = _judged(program, tests, b"", "tests", timeout_s, memory_mb)
        return CodeResult(status == "passed", status, detail, _text(run.stdout[:OUTPUT_LIMIT]),
                          run.stderr, time.monotonic() - start)
    except Exception as exc:  # run_tests never raises: a host-side failure is an error result
        return CodeResult(False, "error", f"sandbox failure: {type(exc).__name__}: {exc}",
                          duration_s=time.monotonic() - start)


def normalize_output(text: str) -> str:
    """Trailing whitespace stripped on each line and at the end (run_io's comparison)."""
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip()


def _case_status(status: str, detail: str, run: _Run, expected: str) -> str:
    if status == "passed":
        same = normalize_output(_text(run.stdout)) == normalize_output(expected)
        return "pass" if same else "wrong_answer"
    if "MemoryError" in detail:
        return "memory"
    if status == "timeout" or detail.endswith("SIGXCPU"):
        return "timeout"
    return "runtime_error"


def _bad_cases(cases) -> str:
    if not isinstance(cases, (list, tuple)) or not cases:
        return "cases must be a non-empty list of (stdin_text, expected_stdout) pairs"
    for i, case in enumerate(cases):
        if not (isinstance(case, (list, tuple)) and len(case) == 2
                and all(isinstance(part, str) for part in case)):
            return f"case {i} is not a (stdin_text, expected_stdout) pair of str: {case!r:.80}"
    return ""


def run_io(program: str, cases, *, timeout_s: float = 5.0, memory_mb: int = 1024) -> CodeResult:
    """Run a stdin/stdout `program` once per (stdin_text, expected_stdout) case, each with its
    own `timeout_s`, as `__main__`. `passed` iff every case's output matches after
    `normalize_output`; `cases` holds one of CASE_STATUSES per case. Never raises."""
    start = time.monotonic()
    try:
        problem = "program must be str" if not isinstance(program, str) else _bad_cases(cases)
        if problem:
            return CodeResult(False, "error", problem)
        statuses, first_fail = [], None
        for i, (stdin_text, expected) in enumerate(cases):
            status, detail, run = _judged(program, "", stdin_text.encode("utf-8", "surrogatepass"),
                                          "io", timeout_s, memory_mb)
            statuses.append(_case_status(status, detail, run, expected))
            if first_fail is None and statuses[-1] != "pass":
                first_fail = (i, detail, run)
        duration = time.monotonic() - start
        if first_fail is None:
            return CodeResult(True, "passed", "", _text(run.stdout[:OUTPUT_LIMIT]), run.stderr,
                              duration, statuses)
        i, detail, run = first_fail
        return CodeResult(False, _CASE_TO_STATUS[statuses[i]],
                          f"case {i}: {statuses[i]}" + (f" ({detail})" if detail else ""),
                          _text(run.stdout[:OUTPUT_LIMIT]), run.stderr, duration, statuses)
    except Exception as exc:  # never raises: a host-side failure is an error result
        return CodeResult(False, "error", f"sandbox failure: {type(exc).__name__}: {exc}",
                          duration_s=time.monotonic() - start)


def run_tests_batch(programs: list[str], tests: list[str], *, timeout_s: float = 5.0,
                    max_workers: int | None = None, memory_mb: int = 1024) -> list[CodeResult]:
    """`run_tests` over pairs with at most `max_workers` sandboxes alive at once, input order."""
    if len(programs) != len(tests):
        raise ValueError(f"programs and tests differ in length: {len(programs)} vs {len(tests)}")
    isolation()  # probe once, before the threads race to
    workers = max_workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pt: run_tests(pt[0], pt[1], timeout_s=timeout_s,
                                                  memory_mb=memory_mb), zip(programs, tests)))
