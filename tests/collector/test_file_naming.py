"""Which file an event names, end to end (real kernel probes, real nats-server).

The attacker is an unprivileged user (nobody) in a directory it owns: it may
plant symlinks and `..` so that a name folded by text points elsewhere than
the file the kernel changed, or build paths too deep to walk. Every event
must name the file the kernel acted on, by the same path in every event, and
a path whose start is missing must not look like a real one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from snoopbus.proto import TRUNCATED_PREFIX
from tests.support.collector import EventWatch, RunningCollector
from tests.support.kernel import as_nobody

pytestmark = pytest.mark.kernel

def under(watch: EventWatch, root: Path) -> list[dict[str, Any]]:
    """Events of files under `root`, in the order they were made."""
    found = [e for e in watch.events if "file" in e and str(root) in e["file"].get("path", "")]
    return sorted(found, key=lambda e: int(e["id"].rsplit("-", 1)[1]))


async def test_truncated_paths_are_marked_not_absolute(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    # Deeper than the walk goes (path_depth_max components) and longer than 4096 bytes.
    as_nobody(attic, """if True:
        import os
        for _ in range(40):
            os.mkdir("L" * 120)
            os.chdir("L" * 120)
        with open("leaf_file", "w") as f:
            f.write("x")
        os.unlink("leaf_file")
    """, "/usr/bin/python3", "-I", "-c")
    found = await watch.wait_for(
        lambda e: e["type"] == "delete" and e["file"].get("path", "").endswith("/leaf_file"))
    create = await watch.wait_for(
        lambda e: e["type"] == "create" and e["file"].get("path", "").endswith("/leaf_file"))
    for ev in (found[0], create[0]):
        path = ev["file"]["path"]
        assert path.startswith(TRUNCATED_PREFIX + "/"), path
        assert ev["file"]["path_truncated"] is True
        assert not path.startswith("/")


def paths_of(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["file"]["path"]) for e in events]


async def test_dotdot_after_a_symlink_names_the_file_the_kernel_deleted(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    as_nobody(attic, """
        mkdir -p real/sub; ln -s real/sub lnk; echo q > real/q; echo d > q
        rm lnk/../q
        test -e q && ! test -e real/q
    """)
    [ev] = await watch.wait_for(lambda e: e["type"] == "delete"
                                and e["file"]["path"].startswith(str(attic)))
    # Not the decoy {attic}/q, which is still there.
    assert ev["file"]["path"] == f"{attic}/real/q", ev["file"]
    assert ev["file"]["path_resolution"] == "checked"


async def test_one_file_one_path_in_every_event_type(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    """Everything done through a symlinked directory (and `..` after it) is
    named under the real directory, by the same path the file's own events use."""
    as_nobody(attic, """
        mkdir -p real/sub; ln -s real/sub lnk
        echo a > lnk/a
        chmod 600 lnk/a
        mv lnk/a lnk/../sub/b
        ln lnk/b lnk/c
        ln -s target lnk/s
        mkdir lnk/d
        rmdir lnk/../sub/d
        rm lnk/b lnk/c lnk/s
        touch done
    """)
    await watch.wait_for(lambda e: e["type"] == "create"
                         and e["file"]["path"] == f"{attic}/done")
    sub = f"{attic}/real/sub"
    every = paths_of(under(watch, attic))
    assert not [p for _, p in every if p.startswith(f"{attic}/lnk/")], every
    got = [(t, p) for t, p in every if p.startswith(f"{sub}/")]
    # The shell's redirection writes a/ through fds it dup2s (issue 14's
    # close_write item): what matters here is only which path they name.
    written = {p for t, p in got if t in ("modify", "close_write")}
    assert written == {f"{sub}/a"}, got
    got = [(t, p) for t, p in got if t not in ("modify", "close_write")]
    assert got == [
        ("create", f"{sub}/a"),
        ("attrib", f"{sub}/a"),
        ("moved_from", f"{sub}/a"), ("moved_to", f"{sub}/b"),
        ("link", f"{sub}/c"), ("symlink", f"{sub}/s"),
        ("mkdir", f"{sub}/d"), ("rmdir", f"{sub}/d"),
        ("delete", f"{sub}/b"), ("delete", f"{sub}/c"), ("delete", f"{sub}/s"),
    ], got
    for e in under(watch, attic):
        how = e["file"].get("path_resolution")
        if e["type"] in ("create", "modify", "close_write"):
            assert how is None, e  # named by the file's own dentries
        elif e["type"] == "attrib":  # checked by the file's inode: renamed away by now
            assert how in (None, "checked", "unchecked"), e
        elif e["file"]["path"].startswith(f"{sub}/"):
            assert how == "checked", (e["type"], e["file"])  # resolved after the fact, confirmed
        else:
            assert how in (None, "checked"), e


async def test_a_symlink_swapped_after_the_call_is_detected_not_misreported(
    collector: RunningCollector, watch: EventWatch, attic: Path
) -> None:
    """The attacker deletes through lnk/.. and at once points lnk elsewhere,
    at a directory holding a decoy of the same name, before the collector can
    look: the event must say its path is a guess, never call the decoy checked."""
    rounds = 20
    as_nobody(attic, f"""if True:
        import os
        for i in range({rounds}):
            for top in (f"real{{i}}", f"decoy{{i}}"):
                os.makedirs(f"{{top}}/sub")
                with open(f"{{top}}/q", "w") as f:
                    f.write(top)
            os.symlink(f"real{{i}}/sub", f"lnk{{i}}")
            os.unlink(f"lnk{{i}}/../q")
            os.unlink(f"lnk{{i}}")
            os.symlink(f"decoy{{i}}/sub", f"lnk{{i}}")
    """, "/usr/bin/python3", "-I", "-c")
    deletes = await watch.wait_for(
        lambda e: e["type"] == "delete" and e["file"]["path"].startswith(str(attic))
        and e["file"]["path"].endswith("/q"), count=rounds)
    seen = {"checked": 0, "mismatch": 0}
    for ev in deletes:
        f = ev["file"]
        i = f["path"].split("/")[-2].removeprefix("real").removeprefix("decoy")
        if f["path_resolution"] == "checked":
            assert f["path"] == f"{attic}/real{i}/q", f  # the collector looked first
        else:
            assert f["path_resolution"] == "mismatch", f  # the swap won: said so
        seen[f["path_resolution"]] += 1
    print(f"\nswapped symlinks: {seen}")
    assert seen["mismatch"] > 0, "the swap never beat the collector: the race went untested"
