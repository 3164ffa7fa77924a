"""Child side of the code sandbox: run `python -I -S -B sandbox_harness.py` (see `code.py`).

Protocol. stdin carries one header line `nonce<TAB>box dir<TAB>verdict fd<TAB>cpu s<TAB>memory MB
<TAB>file MB<TAB>program bytes<TAB>tests bytes` followed by the program and the tests (UTF-8).
The harness reads it all, then runs the program and the tests in the same process; `OK <nonce>`
reaches the verdict fd only after the tests returned normally. The parent trusts nothing else:
any other exit, any output without the nonce, is a failure.

Why the verdict cannot be forged (threat model: arbitrary Python in this process):
- the nonce and the success message live only in the closure of a bare `_thread` thread that
  nothing else references; it writes the message when the main thread's `_main` frame stands on
  the `# <verdict>` line, which it reaches only after the tests returned normally (a frame's
  position cannot be set from Python once tracing is denied);
- an audit hook (irremovable, its closures unreachable) denies every way to reach that thread:
  sys._current_frames, sys._getframe, frame/traceback/generator attributes, gc introspection,
  tracing/profiling, new audit hooks, ctypes and /proc/<pid>/mem. Signal handlers receive
  main-thread frames only, and no main-thread frame holds the secret;
- the tests run in their own namespace with a private copy of the builtins taken before the
  program ran, so patching `builtins` or catching AssertionError in the program changes nothing;
- early exits (os._exit, sys.exit, SystemExit, signals) end the process without the message.
Failure lines (`FAIL stage exception`) are not authenticated: forging one only hurts the forger.
The same hook turns forbidden operations into PermissionError (an OSError) inside the program.
"""

import builtins
import os
import resource
import signal
import sys


def _install_hook(box):
    """Install the audit hook. Everything it uses lives in this function's closures, which
    nothing outside references (the hook object itself is held only by the interpreter)."""
    to_str, is_inst, bytes_t, int_t, tuple_t = str, isinstance, bytes, int, tuple
    len_, perm_error, value_error, base_exc = len, PermissionError, ValueError, BaseException
    lstat, readlink, getcwd = os.lstat, os.readlink, os.getcwd
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def realpath(path):
        """Resolve symlinks with private C-level calls only (os.path is patchable by user code)."""
        if is_inst(path, bytes_t):
            path = path.decode("utf-8", "surrogateescape")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        parts, out, hops = path.split("/"), [], 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            candidate = "/" + "/".join(out + [part])
            try:
                is_link = (lstat(candidate).st_mode & 0o170000) == 0o120000
            except base_exc:
                is_link = False
            if is_link and hops < 40:
                hops += 1
                target = readlink(candidate)
                if target.startswith("/"):
                    out = []
                parts = target.split("/") + parts
            else:
                out.append(part)
        return "/" + "/".join(out)

    def inside_box(path):
        p = realpath(path)
        return p == box or p.startswith(box + "/")

    def readable(path):
        p = realpath(path)
        if p.startswith("/proc/"):
            head = p.split("/")[2]
            return not (head.isdigit() or head in ("self", "thread-self", "kcore", "kmem", "mem"))
        if p.startswith("/dev/"):
            return p in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
        return True

    denied_events = frozenset((
        "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
        "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
        "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.addaudithook",
        "sys.setprofile", "object.__getattr__", "gc.get_objects", "gc.get_referrers",
        "gc.get_referents", "resource.setrlimit", "resource.prlimit", "ctypes.dlopen",
        "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata", "ctypes.string_at",
        "ctypes.addressof", "os.chroot", "os.setxattr", "os.removexattr", "os.chflags",
        "os.lchflags", "os.mknod", "os.mkfifo", "cpython.PyInterpreterState_New",
    ))
    denied_modules = frozenset(("_signal", "ctypes", "_ctypes", "_posixsubprocess", "cffi", "_cffi_backend",
                                "_xxsubinterpreters", "_lsprof", "_tracemalloc", "faulthandler",
                                "_dbm", "_gdbm"))  # these open files in C, unaudited
    # event -> positions of path arguments that must resolve inside the box
    path_events = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
                   "os.link": (0, 1), "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,),
                   "os.utime": (0,), "os.truncate": (0,), "shutil.rmtree": (0,)}
    dir_fd_pos = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.rename": (2, 3),
                  "os.link": (2, 3), "os.symlink": 2, "os.chmod": 2, "os.chown": 3, "os.utime": 3}

    def deny(event):
        raise perm_error("sandbox: " + event + " is not allowed")

    def hook(event, args):
        if event == "sys._getframe":
            # ValueError ("stack not deep enough") keeps namedtuple/enum/warnings working.
            raise value_error("sandbox: sys._getframe is not allowed")
        if event in denied_events:
            deny(event)
        if event == "import":
            if args[0] in denied_modules or args[0].split(".")[0] in denied_modules:
                deny("import " + args[0])
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if is_inst(path, int_t) or path is None:
                return
            if is_inst(flags, int_t):
                writing = (flags & write_flags) != 0
            else:
                writing = mode is not None and (("w" in mode) or ("a" in mode) or ("x" in mode)
                                                or ("+" in mode))
            if writing:
                if mode is None and not (to_str(path) if not is_inst(path, bytes_t) else
                                         path.decode("utf-8", "replace")).startswith("/"):
                    deny("os.open for writing with a relative path")  # dir_fd is not audited
                if not inside_box(path) and realpath(path) != "/dev/null":
                    deny("writing " + to_str(path))
            elif not readable(path):
                deny("reading " + to_str(path))
            return
        if event == "sqlite3.connect":
            database = args[0]
            if is_inst(database, bytes_t):
                database = database.decode("utf-8", "replace")
            if database.startswith("file:") or (database not in (":memory:", "")
                                                and not inside_box(database)):
                deny("sqlite3 database outside the temp dir")
            return
        if event == "object.__setattr__" and args[1] in ("__code__", "__globals__", "__closure__"):
            deny(event)
        positions = path_events.get(event)
        if positions is not None:
            fds = dir_fd_pos.get(event, ())
            for pos in (fds if is_inst(fds, tuple_t) else (fds,)):
                if pos < len_(args) and args[pos] not in (None, -1):
                    deny(event + " with dir_fd")
            for pos in positions:
                path = args[pos]
                if is_inst(path, int_t):
                    if event in ("os.chmod", "os.chown", "os.utime"):
                        deny(event + " on a file descriptor")
                    continue
                if not inside_box(path):
                    deny(event + " " + to_str(path))

    sys.addaudithook(hook)


def _start_verdict_thread(nonce, vfd, main_frame, success_line, wake_r):
    """The only holder of the success message: a bare thread (not in threading's registry)
    that writes it once the main frame stands on `success_line`, i.e. the tests returned.
    Signal handlers run in the main thread and see only main-thread frames, never this one."""
    import _thread

    ok_msg = ("OK " + nonce + "\n").encode()
    read, write, exit_ = os.read, os.write, os._exit

    def watch():
        while read(wake_r, 1):
            if main_frame.f_lineno == success_line:
                write(vfd, ok_msg)
                exit_(0)
        exit_(1)

    _thread.start_new_thread(watch, ())


def _refuse_signal_handler(*args, **kwargs):
    raise PermissionError("sandbox: installing signal handlers is not allowed")


def _disable_signal_handlers():
    """A Python signal handler receives the interrupted frame, and through f_back/f_globals
    the harness and test namespaces: refuse handlers (the module cannot be re-imported, the
    hook denies `import _signal`)."""
    import _signal

    _signal.signal = signal.signal = _refuse_signal_handler
    del sys.modules["signal"]  # `import signal` re-runs signal.py, which needs _signal: cached


def _success_line():
    with open(__file__, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, 1) if line.rstrip().endswith("# <verdict>"))


def _main():
    # Private references taken before any user code can patch the modules they live in.
    write, exit_, read, close, dup2 = os.write, os._exit, os.read, os.close, os.dup2
    run, compile_ = exec, compile
    base_exc = BaseException
    to_str, dict_t, type_t = str, dict, type
    flushes = (sys.stdout.flush, sys.stderr.flush)  # os._exit below skips interpreter flushing

    def flush():
        for f in flushes:
            try:
                f()
            except base_exc:
                pass

    chunks = []
    while True:
        chunk = read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    del chunks
    header, _, body = data.partition(b"\n")
    nonce, box, vfd, cpu_s, mem_mb, file_mb, n_prog, n_tests = header.decode().split("\t")
    vfd, n_prog, n_tests = int(vfd), int(n_prog), int(n_tests)
    program = body[:n_prog].decode("utf-8", "replace")
    tests = body[n_prog:n_prog + n_tests].decode("utf-8", "replace")
    del data, body, header

    def report_fail(kind, exc):
        flush()
        try:
            name = type_t(exc).__name__
        except base_exc:
            name = "?"
        try:
            write(vfd, ("FAIL " + kind + " " + to_str(name) + "\n").encode())
        except base_exc:
            pass
        exit_(1)

    devnull = os.open(os.devnull, os.O_RDWR)
    dup2(devnull, 0)
    close(devnull)
    os.environ.clear()
    box = os.path.realpath(box)
    os.chdir(box)
    mb = 1 << 20
    limits = [(resource.RLIMIT_CPU, int(cpu_s), int(cpu_s) + 1),
              (resource.RLIMIT_AS, int(mem_mb) * mb, int(mem_mb) * mb),
              (resource.RLIMIT_FSIZE, int(file_mb) * mb, int(file_mb) * mb),
              (resource.RLIMIT_CORE, 0, 0),
              (resource.RLIMIT_NOFILE, 256, 256),
              (resource.RLIMIT_NPROC, 64, 64)]  # root ignores NPROC; the pids cgroup and hook hold
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes raise OSError, not kill

    # Modules the tests commonly use: imported now, restored after the program ran.
    import collections, fractions, functools, heapq, itertools, math, re, string  # noqa: E401
    guarded = {m: (sys.modules[m], dict(sys.modules[m].__dict__))
               for m in ("math", "re", "string", "collections", "itertools", "functools", "heapq",
                         "fractions", "builtins")}
    builtins_copy = dict(builtins.__dict__)
    modules_dict = sys.modules

    try:
        program_code = compile_(program, "<program>", "exec")
    except base_exc as exc:
        report_fail("error", exc)
    try:
        tests_code = compile_(tests, "<tests>", "exec")
    except base_exc as exc:
        report_fail("error", exc)
    del program, tests
    wake_r, wake_w = os.pipe()
    hold_r, hold_w = os.pipe()
    _start_verdict_thread(nonce, vfd, sys._getframe(), _success_line(), wake_r)
    del nonce
    _install_hook(box)
    _disable_signal_handlers()

    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        run(program_code, namespace)
    except base_exc as exc:
        report_fail("error", exc)

    for name, (module, saved) in guarded.items():
        modules_dict[name] = module
        module.__dict__.clear()
        module.__dict__.update(saved)
    test_namespace = dict_t(namespace)
    test_namespace["__builtins__"] = dict_t(builtins_copy)
    try:
        run(tests_code, test_namespace)
    except base_exc as exc:
        report_fail("failed", exc)
    flush()
    write(wake_w, b"!"); read(hold_r, 1)  # <verdict>
    exit_(1)


_main()
