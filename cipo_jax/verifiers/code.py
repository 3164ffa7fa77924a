"""Run an untrusted program and its tests in a sandboxed subprocess; never raises.

`run_tests(program, tests)` executes `program`, then `tests` in the same namespace, in a fresh
Python (`-I -S -B`: no site-packages, no environment, no bytecode writes) and reports `passed`
iff every test statement completed without an exception within the limit.

Layers (each holds on its own; see docs/verifiers.md for what holds where):
1. Linux namespaces via `unshare` when available: a new PID namespace (every descendant dies
   with the sandbox), a new network namespace (no interfaces but a down loopback), a mount
   namespace with every mount remounted read-only and a 64 MB tmpfs as the only writable
   directory. A pids cgroup (v1 or v2, when writable) caps the process count, since root ignores
   RLIMIT_NPROC.
2. rlimits set by the harness: CPU seconds, address space, file size, open files, no core.
3. An audit hook in the child (`sandbox_harness.py`) that turns process creation, signalling,
   sockets, writes outside the temp dir and introspection into PermissionError inside the
   program, and a nonce-authenticated verdict channel the program cannot forge.
4. The parent: its own session, SIGKILL to the group at the deadline and at the end, empty
   environment, fresh temp dir removed afterwards, output capped by file size limits.
"""

from __future__ import annotations

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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

STATUSES = ("passed", "failed", "timeout", "error", "killed")
HARNESS = str(Path(__file__).with_name("sandbox_harness.py"))
OUTPUT_LIMIT = 8192  # bytes of stdout/stderr kept in the result
FILE_LIMIT_MB = 16  # RLIMIT_FSIZE: caps stdout/stderr files and files the program writes
BOX_SIZE_MB = 64  # tmpfs size of the writable temp dir (namespace mode)
PIDS_MAX = 32

# PID 1 of the namespace: join the pids cgroup, mount the private tmpfs, remount everything
# else read-only, then run the harness as a child so signals keep their default meaning.
_SETUP = r"""
set -e
[ -n "$4" ] && echo $$ > "$4/cgroup.procs"
if [ "$5" = 1 ]; then
  mount -t tmpfs -o size={box}m,mode=700 tmpfs "$1"
  while read -r _ m t o _; do
    case "$t,$o" in cgroup*|devpts*|mqueue*|*,ro,*|*,ro) continue;; esac
    [ "$m" = "$1" ] || mount -o remount,bind,ro "$m" 2>/dev/null || true
  done < /proc/self/mounts
fi
set +e
cd "$1"
"$2" -I -S -B "$3" "$1"  # the box path names the run in process listings
exit $?
""".replace("{box}", str(BOX_SIZE_MB))


@dataclass(frozen=True)
class CodeResult:
    passed: bool
    status: str  # one of STATUSES
    detail: str = ""  # which stage failed and the exception type, or the signal
    stdout: str = ""  # first OUTPUT_LIMIT bytes
    stderr: str = ""
    duration_s: float = 0.0


@lru_cache(maxsize=1)
def _namespace_mode() -> bool:
    """True when `unshare` can create PID + network + mount namespaces and remount here."""
    exe = shutil.which("unshare")
    sh = shutil.which("sh")
    if exe is None or sh is None:
        return False
    try:
        probe = subprocess.run([exe, "--pid", "--fork", "--kill-child", "--net", "--mount",
                                "--mount-proc", "--propagation", "private", sh, "-c",
                                "mount -t tmpfs tmpfs /mnt && mount -o remount,bind,ro /"],
                               env={}, capture_output=True, timeout=10)
        return probe.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


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


def _read_head(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError:
        return ""


def _classify(verdict: str, nonce: str, returncode: int | None, timed_out: bool) -> tuple[str, str]:
    for line in verdict.splitlines():
        if line == f"OK {nonce}":
            return "passed", ""
    for line in verdict.splitlines():
        if line.startswith("FAIL "):
            kind, _, exc = line[len("FAIL "):].partition(" ")
            stage = "program" if kind == "error" else "tests"
            return ("error" if kind == "error" else "failed"), f"{stage} raised {exc}".strip()
    if timed_out:
        return "timeout", "wall-clock limit"
    if returncode is not None and (returncode < 0 or returncode > 128):
        sig = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed", f"terminated by {name}"
    return "failed", f"exited with code {returncode} before the tests completed"


def run_tests(program: str, tests: str, *, timeout_s: float = 5.0,
              memory_mb: int = 1024) -> CodeResult:
    """Run `program` then `tests` in the sandbox; `passed` iff the tests completed normally."""
    start = time.monotonic()
    try:
        return _run(program, tests, timeout_s, memory_mb, start)
    except Exception as exc:  # run_tests never raises: a host-side failure is an error result
        return CodeResult(False, "error", f"sandbox failure: {type(exc).__name__}: {exc}",
                          duration_s=time.monotonic() - start)


def _run(program: str, tests: str, timeout_s: float, memory_mb: int, start: float) -> CodeResult:
    if not isinstance(program, str) or not isinstance(tests, str):
        return CodeResult(False, "error", "program and tests must be str")
    nonce = secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="cipo_sandbox_"))
    box = work / "box"
    box.mkdir(mode=0o700)
    cgroup = _make_cgroup()
    ns = _namespace_mode()
    proc = None
    timed_out = False
    try:
        prog_b = program.encode("utf-8", "surrogatepass")
        tests_b = tests.encode("utf-8", "surrogatepass")
        with open(work / "stdout", "wb") as out, open(work / "stderr", "wb") as err, \
                open(work / "verdict", "wb") as verdict:
            vfd = verdict.fileno()
            header = "\t".join(map(str, [nonce, box, vfd, math.ceil(timeout_s) + 1, memory_mb,
                                         FILE_LIMIT_MB, len(prog_b), len(tests_b)]))
            payload = header.encode() + b"\n" + prog_b + tests_b
            python = os.path.realpath(sys.executable)
            argv = [shutil.which("sh") or "/bin/sh", "-c", _SETUP, "sandbox", str(box), python,
                    HARNESS, cgroup, "1" if ns else "0"]
            if ns:
                argv = [shutil.which("unshare"), "--pid", "--fork", "--kill-child", "--net",
                        "--mount", "--mount-proc", "--propagation", "private"] + argv
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                    pass_fds=(vfd,), env={}, cwd=str(box),
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
    verdict_text = _read_head(work / "verdict", 4096)
    status, detail = _classify(verdict_text, nonce, proc.returncode if proc else None, timed_out)
    result = CodeResult(status == "passed", status, detail,
                        _read_head(work / "stdout", OUTPUT_LIMIT),
                        _read_head(work / "stderr", OUTPUT_LIMIT), time.monotonic() - start)
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_tests_batch(programs: list[str], tests: list[str], *, timeout_s: float = 5.0,
                    max_workers: int | None = None, memory_mb: int = 1024) -> list[CodeResult]:
    """`run_tests` over pairs with at most `max_workers` sandboxes alive at once, input order."""
    if len(programs) != len(tests):
        raise ValueError(f"programs and tests differ in length: {len(programs)} vs {len(tests)}")
    workers = max_workers or max(1, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pt: run_tests(pt[0], pt[1], timeout_s=timeout_s,
                                                  memory_mb=memory_mb), zip(programs, tests)))
