"""Type-check the shipped package with mypy (`make typecheck`, part of `make test`).

    .venv/bin/python -m tests.typecheck [extra mypy arguments]

The editable install maps the folders into `snoopbus.*` through setuptools'
import hook, which mypy cannot follow. So the mapping in pyproject.toml's
[tool.setuptools] package-dir is rebuilt as a tree of symlinks in a temporary
directory, and mypy checks `-p snoopbus` there with the [tool.mypy] settings.
A folder added to package-dir is checked with no change here. Paths in the
report are the repository's own (`collector/cli.py`, not the symlink path),
and nothing is left behind: the tree and mypy's cache live in the temporary
directory (set MYPY_CACHE_DIR to keep a cache between runs).

tests/ is not checked yet: even without strict's rules for annotations it
has 191 errors in 51 files, most of them event maps built as plain dicts
where the API takes the Event TypedDict, repeated in each copy of the test
factories. Once the tests share one tests/support whose factories return
Event (issue 16, item 4), checking them costs a few fixes, not 51 files.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "snoopbus"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Import name → folder, from [tool.setuptools] package-dir."""
    with pyproject.open("rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    return {name: (pyproject.parent / folder).resolve() for name, folder in mapping.items()}


def build_tree(top: Path, dirs: dict[str, Path]) -> None:
    """Link each mapped folder at its import path under top; packages between stay empty."""
    for name, folder in sorted(dirs.items()):
        *parents, leaf = name.split(".")
        here = top
        for part in parents:
            here = here / part
            here.mkdir(exist_ok=True)
            (here / "__init__.py").touch()
        (here / leaf).symlink_to(folder, target_is_directory=True)


def report_paths(line: str, dirs: dict[str, Path]) -> str:
    """`snoopbus/collector/cli.py:3: …` → `collector/cli.py:3: …` (longest mapping first)."""
    for name, folder in sorted(dirs.items(), key=lambda item: -len(item[0])):
        prefix = name.replace(".", "/") + "/"
        if line.startswith(prefix):
            return os.path.relpath(folder, ROOT) + "/" + line[len(prefix):]
    return line


def main(argv: list[str]) -> int:
    pyproject = ROOT / "pyproject.toml"
    dirs = package_dirs(pyproject)
    with tempfile.TemporaryDirectory(prefix="snoopbus-mypy-") as tmp:
        build_tree(Path(tmp), dirs)
        env = dict(os.environ)
        env.setdefault("MYPY_CACHE_DIR", str(Path(tmp) / ".mypy_cache"))
        cmd = [sys.executable, "-m", "mypy", "--config-file", str(pyproject),
               "-p", PACKAGE, *argv]
        done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        print(report_paths(line, dirs))
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
