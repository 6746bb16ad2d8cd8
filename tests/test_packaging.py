"""The built wheel holds every package and data file (editable installs hide a gap)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"proto": "snoopbus/proto", "collector": "snoopbus/collector",
           "consumers": "snoopbus/consumers", "app": "snoopbus/app"}


# Probe sources, rule sets and schemas are data the code loads at run time.
SHIPPED = {".py", ".c", ".h", ".yml", ".yaml", ".toml", ".json"}


def expected_files() -> set[str]:
    """Code and data under the package folders (not docs), as wheel paths."""
    want = set()
    for folder, prefix in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT / folder)
            if "__pycache__" in rel.parts or not path.is_file():
                continue
            if path.suffix in SHIPPED and not rel.parts[0].startswith("."):
                want.add(f"{prefix}/{rel.as_posix()}")
    return want


def test_wheel_contains_every_module_and_probe_source(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    [wheel] = tmp_path.glob("snoopbus-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = expected_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert "snoopbus/collector/bpf/snoopbus.bpf.c" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "snoopbus = snoopbus.app.main:main" in text
    assert "[snoopbus.consumers]" in text


def test_build_is_clean_and_ships_the_licence(tmp_path: Path) -> None:
    """`python -m build`: no deprecation or unlisted-package warnings; the
    Apache-2.0 text and its SPDX expression are in the wheel."""
    out = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-3000:]
    assert "WARNING" not in log and "deprecated" not in log.lower(), log[-3000:]
    [wheel] = tmp_path.glob("snoopbus-*.whl")
    with zipfile.ZipFile(wheel) as z:
        [licence] = [n for n in z.namelist() if n.endswith("/licenses/LICENSE")]
        assert "Apache License" in z.read(licence).decode()
        [meta] = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: Apache-2.0" in z.read(meta).decode()
