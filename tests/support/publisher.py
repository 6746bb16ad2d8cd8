"""The collector publisher's tests: what they submit, reading back what was
stored, and a server whose users may not publish everywhere."""

from __future__ import annotations

from nats.js import JetStreamContext

from snoopbus.proto import STREAM_NAME, NatsAuth, decode_batch, event_subject, published_subject

EXEC = event_subject("h1", "exec")
EXIT = event_subject("h1", "exit")


def to_submit(n: int, type_: str = "exec", start: int = 0) -> list[tuple[str, dict]]:
    """`n` events (the header only) with their subjects, as Publisher.submit takes them."""
    subject = EXEC if type_ == "exec" else EXIT
    return [
        (subject, {"v": 1, "id": f"inst-{start + i}", "ts": i, "host": "h1", "type": type_})
        for i in range(n)
    ]


async def stored(js: JetStreamContext) -> list[tuple[str, dict[str, str], list[dict]]]:
    """Every message in the stream: subject (as published), headers, events."""
    info = await js.stream_info(STREAM_NAME)
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(STREAM_NAME, seq)
        out.append((published_subject(msg.subject), dict(msg.headers or {}),
                    decode_batch(msg.data)))
    return out


ADMIN = NatsAuth(user="admin", password="admin-pw")
COLLECTOR = NatsAuth(user="collector", password="collector-pw")


def permissions_conf(deny: str) -> str:
    """Two users: admin may do anything; collector anything but publish to `deny`."""
    return f"""
authorization {{
  users = [
    {{user: "admin", password: "admin-pw"}}
    {{user: "collector", password: "collector-pw",
      permissions: {{publish: {{allow: [">"], deny: ["{deny}"]}}, subscribe: {{allow: [">"]}}}}}}
  ]
}}
"""
