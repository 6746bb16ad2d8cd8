"""Dependencies between the folders point one way: import-linter's contract in pyproject.toml.

app/ (the `snoopbus` command and `up`) may import collector/, consumers/ and proto/;
collector/ and consumers/ import proto/ and never each other; proto/ imports nothing
of snoopbus. `lint-imports` reads the import statements (those inside functions and
under TYPE_CHECKING too) of every module grimp finds: the editable install's finder
maps each `snoopbus.<folder>` to this worktree, so it checks these files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("proto", "collector", "consumers", "app")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # --no-cache: no .import_linter_cache left in the worktree.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", "pyproject.toml"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_dependencies_point_one_way() -> None:
    out = lint_imports()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 1 kept, 0 broken." in out.stdout, out.stdout
    # Every module of the four folders was read (a contract over no files is kept too).
    files = sum(1 for f in FOLDERS for _ in (ROOT / f).rglob("*.py"))
    assert f"Analyzed {files} files" in out.stdout, out.stdout


def test_an_import_the_wrong_way_breaks_it(tmp_path: Path) -> None:
    """The same check over a copy of proto/ with one module importing collector/: red.

    The copy sits in tmp/snoopbus beside links to this worktree's other folders, found on
    PYTHONPATH before the editable finder (Python consults it last). No __init__.py there:
    `snoopbus` stays a namespace package, as grimp wants of root packages named inside it."""
    tree = tmp_path / "snoopbus"
    tree.mkdir()
    for folder in FOLDERS:
        if folder == "proto":
            shutil.copytree(ROOT / folder, tree / folder,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (tree / folder).symlink_to(ROOT / folder)
    (tree / "proto" / "wrong_way.py").write_text("from snoopbus.collector import loss\n")
    out = lint_imports({"PYTHONPATH": str(tmp_path)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Contracts: 0 kept, 1 broken." in out.stdout, out.stdout
    assert "snoopbus.proto.wrong_way -> snoopbus.collector.loss" in out.stdout, out.stdout
