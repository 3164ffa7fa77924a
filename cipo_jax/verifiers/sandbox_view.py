"""Operating-system layer of the code sandbox: the filesystem view and the privilege drop.

Runs inside the harness process (loaded by path, before any untrusted code) after `unshare`
created new PID, network, mount, IPC and UTS namespaces (and, for a non-root caller, a user
namespace in which the caller is root). Two steps:

`enter_view(new_root, prefixes, box_mb, files, execute_only)`, as root of the mount namespace: a
    tmpfs root holding only what a Python program needs, read-only: the interpreter's prefix
    (stdlib, lib-dynload, its own site-packages) at its host path, /usr and the top-level links
    or directories the dynamic loader uses (/bin, /lib, /lib64, /sbin), /etc/ld.so.cache, a
    synthetic /etc/passwd and /etc/group, the harmless /dev nodes, copies of `files` (the
    harness); a fresh /proc of the sandbox's PID namespace; writable tmpfs /tmp (the box) and
    /dev/shm. The interpreter binary is replaced by an execute-only copy: the kernel marks a
    process whose binary it cannot read as not dumpable, so no other sandbox process can read
    the program's memory. pivot_root into it and detach the host root, so no host path outside
    that list (no /etc/shadow, /home, /root, project tree, host /proc) exists for the program.
`drop_privileges(in_user_ns)`: become uid/gid 65534 (nobody) with no capabilities, no
    supplementary groups, `no_new_privs` and not dumpable (so no process of the same uid can
    read this process's memory through /proc/<pid>/mem or ptrace). As real root: setresuid.
    Inside a user namespace (non-root caller), where only uid 0 is mapped: a nested user
    namespace mapping 65534 to the caller, then clear the capabilities it grants.

Everything here is plain syscalls through ctypes; errors raise OSError naming the step.
"""

import ctypes
import os
import platform

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
CLONE_NEWUSER = 0x10000000
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
# statvfs flags that a bind remount must keep (the kernel refuses to clear locked ones).
_KEPT_FLAGS = MS_NODEV | MS_NOEXEC | 1024 | 2048 | 4096  # + noatime, nodiratime, relatime
_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126},
             "aarch64": {"pivot_root": 41, "capset": 91}}
NOBODY = 65534
DEVICES = ("null", "zero", "full", "random", "urandom")

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, step: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"sandbox view: {step}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source} on {target}")


def _syscall(name: str, *args) -> int:
    table = _SYSCALLS.get(platform.machine())
    if table is None:
        raise OSError(f"sandbox view: no syscall table for {platform.machine()}")
    return _libc.syscall(table[name], *args)


def _bind_ro(source: str, target: str) -> None:
    """Bind `source` read-only at `target` (a file or directory that already exists)."""
    _mount(source, target, None, MS_BIND | MS_REC)
    kept = os.statvfs(source).f_flag & _KEPT_FLAGS
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | kept)


def _mkdirs(root: str, path: str) -> str:
    inside = root + path
    os.makedirs(inside, mode=0o755, exist_ok=True)
    return inside


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _copy(source: str, target: str, mode: int) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    os.chmod(target, mode)


def enter_view(new_root: str, prefixes: list[str], box_mb: int,
               files: dict[str, tuple[str, int]], execute_only: str) -> None:
    """Build the minimal root at `new_root` (an empty directory) and pivot into it. `files`:
    view path -> (host path, mode) to copy in; `execute_only`: the interpreter binary."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=64m,mode=755")
    for top in ("bin", "lib", "lib64", "lib32", "libx32", "sbin"):
        host = "/" + top
        if os.path.islink(host):
            os.symlink(os.readlink(host), new_root + host)  # merged /usr: a link into /usr
        elif os.path.isdir(host):
            _bind_ro(host, _mkdirs(new_root, host))
    for path in ["/usr"] + sorted(set(prefixes)):
        if os.path.isdir(path) and not path.startswith("/usr/"):
            _bind_ro(path, _mkdirs(new_root, path))
    for path, (source, mode) in files.items():
        _mkdirs(new_root, os.path.dirname(path))
        _copy(source, new_root + path, mode)
    private = _mkdirs(new_root, "/sandbox") + "/python"
    _copy(execute_only, private, 0o111)
    _bind_ro(private, new_root + execute_only)
    etc = _mkdirs(new_root, "/etc")
    _write(etc + "/passwd", f"root:x:0:0:root:/:/usr/sbin/nologin\n"
                            f"nobody:x:{NOBODY}:{NOBODY}:nobody:/tmp:/usr/sbin/nologin\n")
    _write(etc + "/group", f"root:x:0:\nnogroup:x:{NOBODY}:\n")
    if os.path.exists("/etc/ld.so.cache"):  # where exec'd binaries find their libraries
        open(etc + "/ld.so.cache", "w").close()
        _bind_ro("/etc/ld.so.cache", etc + "/ld.so.cache")
    dev = _mkdirs(new_root, "/dev")
    for name in DEVICES:
        open(f"{dev}/{name}", "w").close()
        _mount(f"/dev/{name}", f"{dev}/{name}", None, MS_BIND)
    os.symlink("/proc/self/fd", dev + "/fd")
    _mount("tmpfs", _mkdirs(new_root, "/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
           "size=16m,mode=1777")
    _mount("proc", _mkdirs(new_root, "/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _mount("tmpfs", _mkdirs(new_root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={box_mb}m,mode=1777")
    os.chdir(new_root)
    # pivot_root(".", "."): the old root ends up stacked on "/" and is detached right away.
    _check(_syscall("pivot_root", b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach the host root")
    os.chdir("/")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _clear_capabilities() -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    data = (_CapData * 2)()
    _check(_syscall("capset", ctypes.byref(header), data), "clear capabilities")


def drop_privileges(in_user_ns: bool) -> None:
    """Become nobody with no capabilities; irreversible for this process and its children."""
    if in_user_ns:
        _check(_libc.unshare(CLONE_NEWUSER), "nested user namespace")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{NOBODY} 0 1")
        _write("/proc/self/gid_map", f"{NOBODY} 0 1")
    else:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)  # from root: the kernel clears all capabilities
    _clear_capabilities()
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    protect_memory()


def protect_memory() -> None:
    """Not dumpable: /proc/<pid>/mem, environ and ptrace need CAP_SYS_PTRACE, which no sandbox
    process holds (a process always reaches its own memory: the audit hook covers that)."""
    _check(_libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "not dumpable")
