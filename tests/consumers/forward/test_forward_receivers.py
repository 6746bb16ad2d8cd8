"""The forward tests' HTTP receiver (tests/support/forward.py) itself."""

from __future__ import annotations

import json

from tests.support.forward import http_receiver


async def test_receiver_bulk_dedups_by_id() -> None:
    async with http_receiver() as rx:
        action = json.dumps({"create": {"_index": "i", "_id": "a"}})
        body = "\n".join([action, "{}", action, "{}"]) + "\n"
        answer = rx._bulk("/_bulk", body.encode())
        assert [i["create"]["status"] for i in answer["items"]] == [201, 409]
        assert list(rx.docs) == [("i", "a")]
