"""Child side of the code sandbox (see `code.py`): `python -I -S -B sandbox_harness.py ROLE`.

Roles. `init` runs as PID 1 of fresh namespaces (started by `unshare`): it joins the pids
cgroup, builds the filesystem view and pivots into it (`sandbox_view.py`), forks, and the child
drops to nobody and execs a fresh interpreter in role `program` (so nothing the privileged setup
loaded, ctypes included, is in the program's process). PID 1 then reaps until that child exits
and exits with its status; every other process of the namespace dies with it. Without
namespaces the parent starts role `program` directly and the audit hook also stands in for the
missing OS layers (`strict`).

Protocol. stdin carries one header line of tab-separated `key=value` fields (nonce, box, vfd,
cpu_s, memory_mb, file_mb, box_mb, mode, isolation, cgroup, n_program, n_tests, n_stdin) then
the program, the tests and the program's stdin (UTF-8). `OK <nonce>` reaches the verdict fd only
after the tests returned normally (mode `tests`) or the program ended normally (mode `io`); the
parent trusts nothing else: any other exit, any output without the nonce, is a failure.

Why the verdict cannot be forged (threat model: arbitrary Python in this process):
- the nonce and the success message live only in the closure of a bare `_thread` thread that
  nothing else references; it writes the message when the main thread's `_main` frame stands on
  the `# <verdict>` line, which it reaches only after the tests returned normally (a frame's
  position cannot be set from Python once tracing is denied);
- the audit hook (irremovable, its closures unreachable) denies every way to reach that thread or
  its memory: sys._current_frames, sys._getframe, frame-yielding attributes (tb_frame, gi_frame,
  cr_frame, ag_frame), gc introspection, tracing/profiling, new audit hooks, subinterpreters,
  /proc/<pid>/mem, and ctypes (its pointers read any address unaudited: importing it raises
  ImportError, as for an extension that is not built). Signal handlers would receive main-thread
  frames: installing one raises PermissionError. The process is not dumpable (its interpreter
  binary is execute-only in the view), so its own children cannot read its memory either;
- the tests run in their own namespace with a private copy of the builtins taken before the
  program ran, so patching `builtins` or catching AssertionError in the program changes nothing;
- early exits (os._exit, sys.exit, SystemExit, signals) end the process without the message.
Failure lines (`FAIL stage exception`) are not authenticated: forging one only hurts the forger.
"""

import builtins
import os
import resource
import signal
import sys

FRAME_ATTRIBUTES = frozenset(("tb_frame", "gi_frame", "cr_frame", "ag_frame"))
# Raw-memory access (ctypes pointers and from_address, the C-API test modules): ImportError.
MEMORY_MODULES = frozenset(("_ctypes", "ctypes", "_testcapi", "_testinternalcapi",
                            "_testbuffer", "_testmultiphase", "_ctypes_test", "_xxtestfuzz"))
VIEW_HARNESS = "/sandbox/harness.py"  # where `init` puts this file inside the view


def _install_hook(box, strict):
    """Install the audit hook. Everything it uses lives in this function's closures, which
    nothing outside references (the hook object itself is held only by the interpreter).

    Always: what protects the verdict, which only an in-process hook can do. `strict` (no
    namespaces, no unprivileged user): also process creation, signalling, sockets, and writes
    outside the box, as PermissionError (an OSError) at the call."""
    to_str, is_inst, bytes_t, int_t, tuple_t = str, isinstance, bytes, int, tuple
    len_, perm_error, value_error, import_error = len, PermissionError, ValueError, ImportError
    base_exc = BaseException
    lstat, readlink, getcwd = os.lstat, os.readlink, os.getcwd
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def realpath(path):
        """Resolve symlinks with private C-level calls only (os.path is patchable by user code)."""
        if is_inst(path, bytes_t):
            path = path.decode("utf-8", "surrogateescape")
        path = to_str(path)
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

    def process_memory(path, relative_os_open):
        """/proc/<pid>/mem and /proc/<pid>/task/<tid>/mem, however spelled. A relative os.open
        may carry a dir_fd the audit event does not show: judge it by its name alone."""
        if relative_os_open:
            return to_str(path).rstrip("/").split("/")[-1] == "mem"
        p = realpath(path)
        return p.startswith("/proc/") and p.endswith("/mem")

    def strict_readable(path):
        p = realpath(path)
        if p.startswith("/proc/"):
            head = p.split("/")[2]
            return not (head.isdigit() or head in ("self", "thread-self", "kcore", "kmem", "mem"))
        if p.startswith("/dev/"):
            return p in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
        return True

    verdict_events = frozenset((
        "sys._current_frames", "sys._current_exceptions", "sys.settrace", "sys.setprofile",
        "sys.addaudithook", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "cpython.PyInterpreterState_New", "ctypes.dlopen", "ctypes.dlsym",
        "ctypes.call_function", "ctypes.cdata", "ctypes.string_at", "ctypes.wstring_at",
    ))
    strict_events = frozenset((
        "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
        "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
        "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
        "socket.gethostbyname", "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg",
        "resource.setrlimit", "resource.prlimit", "os.chroot", "os.setxattr",
        "os.removexattr", "os.chflags", "os.lchflags", "os.mknod", "os.mkfifo",
    ))
    denied_events = verdict_events | strict_events if strict else verdict_events
    # re-importing _signal would bring back the real signal(); _dbm/_gdbm open files in C.
    denied_modules = frozenset(("_signal",) + (("_dbm", "_gdbm", "_posixsubprocess")
                                               if strict else ()))
    # event -> positions of path arguments that must resolve inside the box (strict only)
    path_events = {"os.remove": (0,), "os.rmdir": (0,), "os.mkdir": (0,), "os.rename": (0, 1),
                   "os.link": (0, 1), "os.symlink": (1,), "os.chmod": (0,), "os.chown": (0,),
                   "os.utime": (0,), "os.truncate": (0,), "shutil.rmtree": (0,)}
    dir_fd_pos = {"os.remove": 1, "os.rmdir": 1, "os.mkdir": 2, "os.rename": (2, 3),
                  "os.link": (2, 3), "os.symlink": 2, "os.chmod": 2, "os.chown": 3, "os.utime": 3}

    def deny(event):
        raise perm_error("sandbox: " + event + " is not allowed")

    def strict_open(path, mode, flags):
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
        elif not strict_readable(path):
            deny("reading " + to_str(path))

    def strict_paths(event, args):
        positions = path_events.get(event)
        if positions is None:
            return
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

    def hook(event, args):
        if event == "sys._getframe":
            # ValueError ("stack not deep enough") keeps namedtuple/enum/logging working.
            raise value_error("sandbox: sys._getframe is not allowed")
        if event == "object.__getattr__":
            if args[1] in FRAME_ATTRIBUTES:
                deny("reading " + to_str(args[1]))
            return
        if event in denied_events:
            deny(event)
        if event == "import":
            name = args[0]
            if name in MEMORY_MODULES or name.split(".")[0] in MEMORY_MODULES:
                raise import_error("sandbox: " + name + " is not available (raw memory access)")
            if name in denied_modules:
                deny("import " + name)
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if is_inst(path, int_t) or path is None:
                return
            relative = mode is None and not (path.decode("utf-8", "replace") if is_inst(
                path, bytes_t) else to_str(path)).startswith("/")
            if process_memory(path, relative):
                deny("reading process memory")
            if strict:
                strict_open(path, mode, flags)
            return
        if strict:
            if event == "sqlite3.connect":
                database = args[0]
                if is_inst(database, bytes_t):
                    database = database.decode("utf-8", "replace")
                if database.startswith("file:") or (database not in (":memory:", "")
                                                    and not inside_box(database)):
                    deny("sqlite3 database outside the temp dir")
                return
            strict_paths(event, args)

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


def _stub_process_creation():
    """Strict mode: subprocess imports, and Popen fails at the call (the hook denies its audit
    event); `_posixsubprocess.fork_exec`, which has no audit event, is replaced in the cache."""
    import subprocess  # noqa: F401  (imports the real _posixsubprocess while that is allowed)
    import types

    stub = types.ModuleType("_posixsubprocess")
    stub.fork_exec = _refuse_process
    sys.modules["_posixsubprocess"] = stub
    sys.modules["subprocess"]._posixsubprocess = stub


def _refuse_process(*args, **kwargs):
    raise PermissionError("sandbox: creating processes is not allowed here")


def _success_line():
    with open(__file__, encoding="utf-8") as f:
        return next(i for i, line in enumerate(f, 1) if line.rstrip().endswith("# <verdict>"))


def _read_payload():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    data = b"".join(chunks)
    header, _, body = data.partition(b"\n")
    fields = dict(item.split("=", 1) for item in header.decode().split("\t"))
    return data, fields, body


def _init(data, fields):
    """PID 1 of the namespaces: view, fork, supervise; the child becomes the program."""
    import importlib.util

    if fields["cgroup"]:
        with open(fields["cgroup"] + "/cgroup.procs", "w") as f:
            f.write("0")  # this process; everything it starts inherits the cgroup
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("sandbox_view", here + "/sandbox_view.py")
    view = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(view)
    view.protect_memory()  # this process holds the nonce
    python = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.exec_prefix)}
    view.enter_view(fields["box"], sorted(prefixes), int(fields["box_mb"]),
                    files={VIEW_HARNESS: (os.path.abspath(__file__), 0o444)},
                    execute_only=python)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(write_end)
            view.drop_privileges(fields["isolation"] == "userns")
            os.dup2(read_end, 0)
            os.close(read_end)
            os.execv(python, [python, "-I", "-S", "-B", VIEW_HARNESS, "program"])
        finally:
            os._exit(126)
    os.close(read_end)
    with open(write_end, "wb") as pipe:
        try:
            pipe.write(data)
        except BrokenPipeError:
            pass
    while True:  # reap orphans too; the program's own exit decides
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            os._exit(125)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


def _main():
    # Private references taken before any user code can patch the modules they live in.
    write, exit_, read, close, dup2 = os.write, os._exit, os.read, os.close, os.dup2
    run, compile_ = exec, compile
    base_exc, system_exit = BaseException, SystemExit
    to_str, dict_t, type_t = str, dict, type
    flushes = (sys.stdout.flush, sys.stderr.flush)  # os._exit below skips interpreter flushing

    def flush():
        for f in flushes:
            try:
                f()
            except base_exc:
                pass

    data, fields, body = _read_payload()
    if sys.argv[1:] == ["init"]:
        _init(data, fields)
    del data
    nonce, vfd, mode = fields["nonce"], int(fields["vfd"]), fields["mode"]
    strict = fields["isolation"] == "off"
    n_prog, n_tests, n_stdin = int(fields["n_program"]), int(fields["n_tests"]), int(fields["n_stdin"])
    program = body[:n_prog].decode("utf-8", "replace")
    tests = body[n_prog:n_prog + n_tests].decode("utf-8", "replace")
    stdin_bytes = body[n_prog + n_tests:n_prog + n_tests + n_stdin]
    del body

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

    os.set_inheritable(vfd, False)  # children the program starts never see the verdict channel
    os.environ.clear()
    box = os.path.realpath(fields["box"]) if strict else "/tmp"
    os.chdir(box)
    stdin_path = box + "/.stdin"
    with open(stdin_path, "wb") as f:
        f.write(stdin_bytes)
    stdin_fd = os.open(stdin_path, os.O_RDONLY)
    os.unlink(stdin_path)
    dup2(stdin_fd, 0)
    close(stdin_fd)
    del stdin_bytes
    mb = 1 << 20
    cpu_s, mem_mb, file_mb = int(fields["cpu_s"]), int(fields["memory_mb"]), int(fields["file_mb"])
    limits = [(resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
              (resource.RLIMIT_AS, mem_mb * mb, mem_mb * mb),
              (resource.RLIMIT_FSIZE, file_mb * mb, file_mb * mb),
              (resource.RLIMIT_CORE, 0, 0),
              (resource.RLIMIT_NOFILE, 256, 256),
              # per uid; the pids cgroup (when writable) is the per-sandbox cap
              (resource.RLIMIT_NPROC, 256, 256)]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversize writes raise OSError, not kill

    # Modules the tests commonly use: imported now, restored after the program ran.
    import collections, fractions, functools, heapq, itertools, math, re, string  # noqa: E401
    if strict:
        _stub_process_creation()
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
    del nonce, fields
    _install_hook(box, strict)
    _disable_signal_handlers()

    namespace = {"__name__": "__main__" if mode == "io" else "__sandbox__",
                 "__builtins__": builtins}
    try:
        run(program_code, namespace)
    except system_exit as exc:
        if mode != "io" or exc.code not in (None, 0):  # io programs may end with sys.exit()
            report_fail("error", exc)
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
