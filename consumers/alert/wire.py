"""Reading an alert back: `decode_alert` (light: no pySigma import, for `tail`).

An alert is one msgpack map (`encode_map`), shaped as proto/alert_map.py
says. Text that is not UTF-8 (paths, argv) travels as msgpack bin, as in
events; without an event schema to say which keys are text, every bin in an
alert is read back as text with `surrogateescape` (alerts carry no binary
data), so values round-trip.
"""

from __future__ import annotations

from typing import Any

from snoopbus.proto import AlertMap, decode_map


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {_text(k): _text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def decode_alert(data: bytes) -> AlertMap:
    """Raises snoopbus.proto.DecodeError for anything that is not a msgpack map."""
    alert: AlertMap = _text(decode_map(data))
    return alert
