"""The file events proto/README.md documents, derived from an strace log.

The log is `strace -f -q -s 4096 -y -e status=successful -e trace=<STRACE_CALLS>`
output: every line starts with the tid, fds are annotated with their path
(`3</tmp/w/f>`, `AT_FDCWD</tmp/w>`), failed calls are left out. The events
follow the tables "Which system calls make which file event" and "What each
file event means": a small model of the folder's names (to tell a create from
an open of an existing file), of each process's fd table (the first write per
fd number, close_write when an open file's last reference goes) and of the
processes (fork copies the fd table, exec starts new write marks).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, field

STRACE_CALLS = (
    "execve,execveat,clone,clone3,fork,vfork,chdir,fchdir,"
    "open,openat,openat2,creat,close,close_range,dup,dup2,dup3,fcntl,"
    "write,pwrite64,writev,pwritev,pwritev2,sendfile,splice,copy_file_range,"
    "ftruncate,fallocate,truncate,mmap,"
    "chmod,fchmod,fchmodat,chown,fchown,lchown,fchownat,utime,utimes,futimesat,utimensat,"
    "setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr,"
    "unlink,unlinkat,rmdir,mkdir,mkdirat,rename,renameat,renameat2,"
    "link,linkat,symlink,symlinkat,mknod,mknodat"
)

STRACE_ARGS = ["-f", "-q", "-s", "4096", "-y", "-e", "status=successful",
               "-e", f"trace={STRACE_CALLS}"]

Key = tuple[int, str, str]  # (pid, type, path)

_LINE = re.compile(r"^(\d+) +(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\) += (-?\w+)(?:<(.*)>)?(?: .*)?$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_EXITED = re.compile(r"^\+\+\+ (?:exited with \d+|killed by \w+.*) \+\+\+$")
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(?:<(.*)>)?$")

# fd-based calls whose modified file is argument N (0-based).
_WRITE_FD_ARG = {
    "write": 0, "pwrite64": 0, "writev": 0, "pwritev": 0, "pwritev2": 0,
    "ftruncate": 0, "fallocate": 0, "sendfile": 0, "splice": 2, "copy_file_range": 2,
}
_FD_ATTRIB = {"fchmod", "fchown", "fsetxattr", "fremovexattr"}
_NAME_ATTRIB = {"chmod", "chown", "lchown", "utime", "utimes",
                "setxattr", "lsetxattr", "removexattr", "lremovexattr"}
_AT_ATTRIB = {"fchmodat", "fchownat", "futimesat", "utimensat"}


def split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a strace call (quotes, brackets, braces)."""
    out: list[str] = []
    depth, start, i, quoted = 0, 0, 0, False
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "[{(<":
            depth += 1
        elif c in "]})>":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
        i += 1
    if text[start:].strip():
        out.append(text[start:].strip())
    return out


def unquote(arg: str) -> str:
    """A strace string argument as text (strace escapes bytes C-style)."""
    assert arg.startswith('"') and arg.endswith('"'), f"not a complete string: {arg}"
    raw = arg[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1")
    return os.fsdecode(raw)


def fd_of(arg: str) -> tuple[int | None, str | None]:
    """(fd number, annotated path) of an fd argument; AT_FDCWD is None."""
    m = _FD.match(arg)
    assert m, f"not an fd argument: {arg}"
    num = None if m.group(1) == "AT_FDCWD" else int(m.group(1))
    return num, m.group(2)


@dataclass
class OpenFile:
    path: str
    writable: bool
    refs: int = 0
    pids: set[int] = field(default_factory=set)  # processes that ever held it


@dataclass
class Fd:
    file: OpenFile
    cloexec: bool
    written: bool = False


@dataclass
class Proc:
    pid: int
    cwd: str
    fds: dict[int, Fd] = field(default_factory=dict)


@dataclass
class Truth:
    events: Counter[Key] = field(default_factory=Counter)
    # close_write of an open file that several processes held: the pid is the
    # last one to let go, which depends on exit order (strace logs that order,
    # so the event is still derived; these paths say where to look on a miss).
    shared_close_paths: set[str] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)


class Model:
    """Replays an strace log; events under `root` (and execs) land in `truth`."""

    def __init__(self, root: str, existing: set[str], first_pid_cwd: str) -> None:
        self.root = root.rstrip("/")
        self.names = set(existing)  # absolute paths that exist under root
        self.procs: dict[int, Proc] = {}
        self.tgid: dict[int, int] = {}  # thread id -> process id
        self.first_cwd = first_pid_cwd
        self.truth = Truth()

    def under(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root + "/")

    def emit(self, pid: int, type_: str, path: str) -> None:
        if type_ == "exec" or self.under(path):
            self.truth.events[(pid, type_, path)] += 1

    def proc(self, tid: int) -> Proc:
        pid = self.tgid.get(tid, tid)
        if pid not in self.procs:
            self.procs[pid] = Proc(pid, self.first_cwd)
        self.truth.pids.add(pid)
        return self.procs[pid]

    def path_at(self, p: Proc, dirfd_arg: str | None, name_arg: str) -> str:
        name = unquote(name_arg)
        if name.startswith("/"):
            base = "/"
        elif dirfd_arg is None:
            base = p.cwd
        else:
            num, annotated = fd_of(dirfd_arg)
            if num is None and annotated:
                p.cwd = annotated
            base = annotated or p.cwd
        return os.path.normpath(os.path.join(base, name))

    # fd table

    def install(self, p: Proc, num: int, f: OpenFile, cloexec: bool) -> None:
        self.release(p, num)
        f.refs += 1
        f.pids.add(p.pid)
        p.fds[num] = Fd(f, cloexec)

    def release(self, p: Proc, num: int) -> None:
        fd = p.fds.pop(num, None)
        if fd is None:
            return
        fd.file.refs -= 1
        if fd.file.refs == 0 and fd.file.writable and self.under(fd.file.path):
            if len(fd.file.pids) > 1:
                self.truth.shared_close_paths.add(fd.file.path)
            self.emit(p.pid, "close_write", fd.file.path)

    def write(self, p: Proc, arg: str) -> None:
        num, annotated = fd_of(arg)
        fd = p.fds.get(num) if num is not None else None
        if fd is None or not self.under(fd.file.path) or fd.written:
            return
        fd.written = True
        self.emit(p.pid, "modify", annotated or fd.file.path)

    # names

    def rename(self, old: str, new: str) -> None:
        def inside(n: str, top: str) -> bool:
            return n == top or n.startswith(top + "/")
        moved = {n for n in self.names if inside(n, old)}
        self.names -= moved
        self.names -= {n for n in self.names if inside(n, new)}
        self.names |= {new + n[len(old):] for n in moved}
        for p in self.procs.values():  # open files keep their file under its new name
            for fd in p.fds.values():
                if inside(fd.file.path, old):
                    fd.file.path = new + fd.file.path[len(old):]

    def feed(self, tid: int, name: str, args: list[str], ret: str, ret_path: str | None
             ) -> None:
        p = self.proc(tid)
        pid = p.pid
        if name in ("clone", "clone3", "fork", "vfork"):
            child = int(ret)
            flags = next((a for a in args if "flags=" in a), "")
            if "CLONE_THREAD" in flags:
                self.tgid[child] = pid
                return
            c = Proc(child, p.cwd)
            self.procs[child] = c
            self.truth.pids.add(child)
            if "CLONE_FILES" in flags:
                return  # a shared table: not in this workload
            for num, fd in p.fds.items():
                fd.file.refs += 1
                fd.file.pids.add(child)
                c.fds[num] = Fd(fd.file, fd.cloexec)
        elif name in ("execve", "execveat"):
            for num in [n for n, fd in p.fds.items() if fd.cloexec]:
                self.release(p, num)
            for fd in p.fds.values():
                fd.written = False  # marks are per process image
            exe = unquote(args[0] if name == "execve" else args[1])
            if not exe.startswith("/"):
                exe = os.path.join(p.cwd, exe)
            self.emit(pid, "exec", os.path.realpath(exe))
        elif name == "chdir":
            p.cwd = self.path_at(p, None, args[0])
        elif name == "fchdir":
            p.cwd = fd_of(args[0])[1] or p.cwd
        elif name in ("open", "openat", "openat2", "creat"):
            if name == "creat":
                path, flags = self.path_at(p, None, args[0]), "O_CREAT|O_WRONLY|O_TRUNC"
            elif name == "open":
                path, flags = self.path_at(p, None, args[0]), args[1]
            else:
                path, flags = self.path_at(p, args[0], args[1]), args[2]
            path = ret_path or path
            existed = path in self.names
            writable = "O_WRONLY" in flags or "O_RDWR" in flags
            if "O_CREAT" in flags and not existed and self.under(path):
                self.names.add(path)
                self.emit(pid, "create", path)
            f = OpenFile(path, writable and "O_PATH" not in flags)
            self.install(p, int(ret), f, "O_CLOEXEC" in flags)
            if "O_TRUNC" in flags and existed and writable:
                self.emit(pid, "modify", path)
                p.fds[int(ret)].written = True
        elif name == "close":
            self.release(p, fd_of(args[0])[0] or 0)
        elif name == "close_range":
            first, last = int(args[0]), int(args[1].replace("~0U", str(2**31)))
            cloexec = "CLOSE_RANGE_CLOEXEC" in (args[2] if len(args) > 2 else "")
            for num in [n for n in p.fds if first <= n <= last]:
                if cloexec:
                    p.fds[num].cloexec = True
                else:
                    self.release(p, num)
        elif name in ("dup", "dup2", "dup3") or (
                name == "fcntl" and args[1] in ("F_DUPFD", "F_DUPFD_CLOEXEC")):
            old = p.fds.get(fd_of(args[0])[0] or -1)
            new = int(ret)
            if old is None:
                self.release(p, new)
            elif new != fd_of(args[0])[0]:
                cloexec = "CLOEXEC" in (args[-1] if name in ("dup3", "fcntl") else "")
                self.install(p, new, old.file, cloexec)
        elif name == "fcntl" and args[1] == "F_SETFD":
            fd = p.fds.get(fd_of(args[0])[0] or -1)
            if fd is not None:
                fd.cloexec = "FD_CLOEXEC" in args[2]
        elif name in _WRITE_FD_ARG:
            self.write(p, args[_WRITE_FD_ARG[name]])
        elif name == "mmap":
            num, annotated = fd_of(args[4])
            fd = p.fds.get(num) if num is not None else None
            if "MAP_SHARED" in args[3] and fd is not None and fd.file.writable:
                self.emit(pid, "modify", annotated or fd.file.path)  # mapped: every call
        elif name == "truncate":
            self.emit(pid, "modify", self.path_at(p, None, args[0]))
        elif name in _FD_ATTRIB:
            path = fd_of(args[0])[1]
            if path:
                self.emit(pid, "attrib", path)
        elif name in _NAME_ATTRIB:
            self.emit(pid, "attrib", self.path_at(p, None, args[0]))
        elif name in _AT_ATTRIB:
            if args[1] == "NULL":  # utimensat(fd, NULL, ...): the fd's file
                path = fd_of(args[0])[1]
                if path:
                    self.emit(pid, "attrib", path)
            else:
                self.emit(pid, "attrib", self.path_at(p, args[0], args[1]))
        elif name in ("unlink", "unlinkat", "rmdir"):
            path = (self.path_at(p, None, args[0]) if name != "unlinkat"
                    else self.path_at(p, args[0], args[1]))
            is_dir = name == "rmdir" or "AT_REMOVEDIR" in (args[2] if name == "unlinkat" else "")
            self.names.discard(path)
            self.emit(pid, "rmdir" if is_dir else "delete", path)
        elif name in ("mkdir", "mkdirat", "mknod", "mknodat", "symlink", "symlinkat",
                      "link", "linkat"):
            if name in ("mkdir", "mknod"):
                path = self.path_at(p, None, args[0])
            elif name in ("mkdirat", "mknodat"):
                path = self.path_at(p, args[0], args[1])
            elif name == "symlink":
                path = self.path_at(p, None, args[1])
            elif name == "symlinkat":
                path = self.path_at(p, args[1], args[2])
            elif name == "link":
                path = self.path_at(p, None, args[1])
            else:
                path = self.path_at(p, args[2], args[3])
            self.names.add(path)
            type_ = {"mkdir": "mkdir", "mknod": "create", "symlink": "symlink",
                     "link": "link"}[name.removesuffix("at")]
            self.emit(pid, type_, path)
        elif name in ("rename", "renameat", "renameat2"):
            if name == "rename":
                old, new = self.path_at(p, None, args[0]), self.path_at(p, None, args[1])
            else:
                old, new = self.path_at(p, args[0], args[1]), self.path_at(p, args[2], args[3])
            if name == "renameat2" and "RENAME_EXCHANGE" in args[4]:
                tmp = old + "\0"
                self.rename(old, tmp)
                self.rename(new, old)
                self.rename(tmp, new)
                for a, b in ((old, new), (new, old)):
                    self.emit(pid, "moved_from", a)
                    self.emit(pid, "moved_to", b)
                return
            self.rename(old, new)
            self.emit(pid, "moved_from", old)
            self.emit(pid, "moved_to", new)

    def exited(self, tid: int) -> None:
        pid = self.tgid.pop(tid, None)
        if pid is not None:
            return  # a thread: the process goes on
        p = self.procs.get(tid)
        if p is None:
            return
        for num in sorted(p.fds):
            self.release(p, num)


def derive(log: str, root: str, existing: set[str], cwd: str) -> Truth:
    """The documented events under `root`, and every exec, from an strace log."""
    model = Model(root, existing, cwd)
    pending: dict[int, str] = {}
    # A new process's first calls can be logged before its parent's clone returns:
    # they wait for that return, which says whose fds it inherited.
    early: dict[int, list[str]] = {}
    lines = log.splitlines()
    first = _LINE.match(lines[0]) if lines else None
    known = {int(first.group(1))} if first else set()
    queue = list(reversed(lines))
    while queue:
        raw = queue.pop()
        m = _LINE.match(raw)
        if not m:
            continue
        tid, rest = int(m.group(1)), m.group(2)
        if tid not in known:
            early.setdefault(tid, []).append(raw)
            continue
        if rest.endswith(" <unfinished ...>"):
            pending[tid] = rest.removesuffix(" <unfinished ...>")
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            rest = pending.pop(tid) + resumed.group(2)
        if _EXITED.match(rest):
            model.exited(tid)
            continue
        call = _CALL.match(rest)
        if not call:
            continue  # signals and the like
        name, args, ret, ret_path = call.groups()
        model.feed(tid, name, split_args(args), ret, ret_path)
        if name in ("clone", "clone3", "fork", "vfork"):
            known.add(int(ret))
            queue.extend(reversed(early.pop(int(ret), [])))
    return model.truth
