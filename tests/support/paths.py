"""Where things are, from anywhere under tests/: the repository and the tests
folder (its C sources, data and example plugin), whatever folder a test sits in."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
