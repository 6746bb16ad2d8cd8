"""Where archive files live, and how one becomes visible only when complete.

    <dir>/events/date=YYYY-MM-DD/<commit_ns>-<writer>-<n>.parquet
    <dir>/alerts/date=YYYY-MM-DD/...

`date` is the event's UTC day. A commit writes one file per kind and day,
every host's rows in it, sorted by the `host` column (the host token), so a
fleet's roll is one file, not one per host (each small file cost its own
encode and fsync: a 200-host fleet's commits wrote 200). Archives written
before kept a folder per host, `date=YYYY-MM-DD/host=<host_token>/`: they are
read, recalled and retained beside the new files, never rewritten.

The file name starts with the commit time in ns (zero-padded), so names
sort by commit and a restart can find the newest.
A file is written as `.<name>.<pid>.tmp` next to its final place, fsynced,
renamed, and its directory fsynced: readers never see a partial file
(DuckDB's `*.parquet` glob and pyarrow, which skips dot-files, both ignore
temporaries), and once the rename is on disk the file survives a power cut.

The archive holds every user's command lines: files are 0640 and folders
0750, all of the archive's group (the archiver's own unless configured), so
other local users can neither read a file nor list the tree. Modes are set
explicitly, whatever the umask; `secure_tree` brings an older tree (0644
files in 0755 folders) into line at start.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

KINDS: Final = ("events", "alerts")
DIR_MODE: Final = 0o750
FILE_MODE: Final = 0o640
SUFFIX: Final = ".parquet"
HOST_COLUMN: Final = "host"  # a file's host tokens (older files: their folder's name)
_TMP: Final = re.compile(r"^\..+\.(\d+)\.tmp$")
_NAME: Final = re.compile(r"^(\d{20})-[0-9a-f]+-\d+\.parquet$")


@dataclass(frozen=True, order=True)
class FileKey:
    """What one file of a commit holds: a kind's rows of one day."""

    kind: str
    date: str  # YYYY-MM-DD

    def folder(self, root: Path) -> Path:
        return root / self.kind / f"date={self.date}"


@dataclass(frozen=True, order=True)
class PartKey:
    """A host's rows within a file (a window gathers them apart: ids are per host)."""

    kind: str
    date: str  # YYYY-MM-DD
    host: str  # host token

    @property
    def file(self) -> FileKey:
        return FileKey(self.kind, self.date)


def day_of(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 10**9, UTC).strftime("%Y-%m-%d")


def file_name(writer: str, n: int) -> str:
    return f"{time.time_ns():020d}-{writer}-{n}{SUFFIX}"


def commit_ns(path: Path) -> int | None:
    m = _NAME.match(path.name)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class ArchiveFile:
    path: Path
    kind: str
    date: str
    host: str | None  # an older file's host folder; None: the file's `host` column says
    size: int


def files(root: Path, kinds: tuple[str, ...] = KINDS) -> Iterator[ArchiveFile]:
    """Every committed file (temporaries excluded), in both layouts."""
    for kind in kinds:
        base = root / kind
        if not base.is_dir():
            continue
        for day in sorted(base.iterdir()):
            if not day.name.startswith("date=") or not day.is_dir():
                continue
            date = day.name[5:]
            with os.scandir(day) as entries:
                for entry in entries:
                    if entry.name.startswith("host=") and entry.is_dir(follow_symlinks=False):
                        with os.scandir(entry.path) as older:  # the older layout
                            yield from _committed(older, kind, date, entry.name[5:])
                    else:
                        yield from _committed([entry], kind, date, None)


def _committed(
    entries: Iterable[os.DirEntry[str]], kind: str, date: str, host: str | None
) -> Iterator[ArchiveFile]:
    for entry in entries:
        if entry.name.endswith(SUFFIX) and not entry.name.startswith(".") and entry.is_file():
            yield ArchiveFile(Path(entry.path), kind, date, host, entry.stat().st_size)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path, gid: int) -> None:
    """mkdir -p (DIR_MODE, group `gid`), fsyncing each parent that gained an
    entry (so the path survives a crash)."""
    missing: list[Path] = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        _own(d, DIR_MODE, gid)
        fsync_dir(d.parent)


def _own(path: Path | str, mode: int, gid: int) -> None:
    os.chown(path, -1, gid)
    os.chmod(path, mode)  # after chown, which may clear mode bits


def secure_tree(root: Path, gid: int) -> int:
    """`root` and every folder and file of the archive's own trees under it
    (KINDS; nothing else a shared folder may hold) DIR_MODE or FILE_MODE, of
    group `gid`; how many had to change. Symbolic links are left alone."""
    entries: list[tuple[str, int]] = [(str(root), DIR_MODE)]
    for kind in KINDS:
        for dirpath, _, names in os.walk(root / kind):
            entries.append((dirpath, DIR_MODE))
            entries += [(os.path.join(dirpath, n), FILE_MODE) for n in names]
    changed = 0
    for path, mode in entries:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue  # a writer's temporary, just renamed
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_IMODE(st.st_mode) != mode or st.st_gid != gid:
            _own(path, mode, gid)
            changed += 1
    return changed


def unreachable(root: Path, gid: int) -> Path | None:
    """The first folder above `root` that members of group `gid` cannot enter
    (no search permission for them), or None."""
    for folder in root.resolve().parents:
        st = folder.stat()
        mode = stat.S_IMODE(st.st_mode)
        if not (mode & 0o001 or (st.st_gid == gid and mode & 0o010)):
            return folder
    return None


def temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.tmp")


def write_durable_temp(final: Path, data: bytes | memoryview, gid: int) -> Path:
    """Write `data` to the temporary beside `final` (FILE_MODE, group `gid`)
    and fsync it; the temp's path."""
    tmp = temp_path(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchown(fd, -1, gid)
        os.fchmod(fd, FILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_temporaries(root: Path) -> list[Path]:
    """Remove temporaries left by writers that are gone (a crash mid-file)."""
    removed: list[Path] = []
    for kind in KINDS:
        base = root / kind
        if not base.is_dir():
            continue
        for dirpath, _, names in os.walk(base):
            for name in names:
                m = _TMP.match(name)
                if m and not _alive(int(m.group(1))):
                    path = Path(dirpath) / name
                    path.unlink(missing_ok=True)
                    removed.append(path)
    return removed


def remove_empty_dirs(root: Path) -> None:
    for kind in KINDS:
        base = root / kind
        if not base.is_dir():
            continue
        for dirpath, _, _ in os.walk(base, topdown=False):
            if Path(dirpath) != base and not os.listdir(dirpath):
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # a writer just put something there
