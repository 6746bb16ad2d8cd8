"""The public API of snoopbus.proto is exactly its __all__ (as httpx checks its own)."""

from __future__ import annotations

import types

import snoopbus.proto as proto


def test_all_names_exist() -> None:
    for name in proto.__all__:
        assert hasattr(proto, name), name


def test_nothing_else_public_leaks() -> None:
    public = {
        name
        for name, value in vars(proto).items()
        # Submodules are reachable as attributes once imported; they are not API.
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(proto.__all__)


def test_all_is_sorted_and_unique() -> None:
    assert len(set(proto.__all__)) == len(proto.__all__)
