"""The optional C extensions' guard (proto/native.py), as both native modules use it."""

from __future__ import annotations

import pytest

from snoopbus.proto.native import disabled, optional_extension


def test_a_missing_extension_is_none_and_says_why() -> None:
    module, missing = optional_extension("snoopbus.collector._not_an_extension")
    assert module is None
    assert missing is not None and missing.startswith("not built (")
    assert "_not_an_extension" in missing


def test_a_present_module_is_returned_with_nothing_missing() -> None:
    module, missing = optional_extension("snoopbus.proto.native")
    assert module is not None and module.optional_extension is optional_extension
    assert missing is None


@pytest.mark.parametrize(("value", "off"), [(None, False), ("1", False), ("0", True)])
def test_snoopbus_native_0_and_only_0_turns_it_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, off: bool
) -> None:
    if value is None:
        monkeypatch.delenv("SNOOPBUS_NATIVE", raising=False)
    else:
        monkeypatch.setenv("SNOOPBUS_NATIVE", value)
    assert disabled() is off
