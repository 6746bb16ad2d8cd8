"""The type-check runner (tests/typecheck.py) sees the package as it is installed."""

from __future__ import annotations

import tomllib
from pathlib import Path

from tests.typecheck import PACKAGE, ROOT, build_tree, package_dirs, report_paths


def test_every_mapped_folder_is_linked_at_its_import_path(tmp_path: Path) -> None:
    with (ROOT / "pyproject.toml").open("rb") as f:
        mapped = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    dirs = package_dirs(ROOT / "pyproject.toml")
    assert set(dirs) == set(mapped) and len(dirs) >= 4  # proto, collector, consumers, app
    build_tree(tmp_path, dirs)
    assert (tmp_path / PACKAGE / "__init__.py").is_file()
    for name, folder in dirs.items():
        linked = tmp_path.joinpath(*name.split("."))
        assert linked.is_symlink() and linked.resolve() == folder
        assert (linked / "__init__.py").is_file()


def test_reports_name_the_repository_files() -> None:
    dirs = package_dirs(ROOT / "pyproject.toml")
    line = "snoopbus/consumers/alert/index.py:12: error: no  [misc]"
    assert report_paths(line, dirs) == "consumers/alert/index.py:12: error: no  [misc]"
    assert report_paths("Found 1 error in 1 file", dirs) == "Found 1 error in 1 file"
