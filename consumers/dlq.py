"""Dead letters: messages a consumer gave up on, kept with the reason.

A dead letter is published to `dlq_subject(<consumer>)` (inside the main
stream, so it is durable) with the original payload byte for byte and these
headers:

    Snoopbus-Dlq-Reason     why, e.g. "v: unsupported schema version 9" or
                            "handler: RuntimeError: boom (attempt 5 of 5)"
    Snoopbus-Dlq-Kind       reason class, as counted: decode, schema, attempts
    Snoopbus-Dlq-Subject    the subject the message was published on (as sent,
                            without the bucket the stream stores with it)
    Snoopbus-Dlq-Consumer   the consumer that gave up
    Snoopbus-Dlq-Stream-Seq the original's sequence in the stream
    Snoopbus-Dlq-Attempts   how many deliveries it had
    Nats-Msg-Id             derived from consumer, sequence and the original's
                            id and payload, so a crash between dead-lettering and acking
                            cannot file it twice, and a collector that cannot
                            read the original's id cannot guess it (and
                            suppress the letter by publishing that id first)

Replay is therefore `js.publish(h["Snoopbus-Dlq-Subject"], msg.data)`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from nats.js import JetStreamContext

from snoopbus.proto import dlq_subject

REASON = "Snoopbus-Dlq-Reason"
KIND = "Snoopbus-Dlq-Kind"
SUBJECT = "Snoopbus-Dlq-Subject"
CONSUMER = "Snoopbus-Dlq-Consumer"
STREAM_SEQ = "Snoopbus-Dlq-Stream-Seq"
ATTEMPTS = "Snoopbus-Dlq-Attempts"
_MAX_REASON = 1000


@dataclass(frozen=True)
class DeadLetter:
    consumer: str
    kind: str
    reason: str
    subject: str
    payload: bytes
    stream_seq: int
    attempts: int
    original_id: str = ""  # the original's Nats-Msg-Id, if it had one

    def headers(self) -> dict[str, str]:
        return {
            REASON: header_safe(self.reason),
            KIND: self.kind,
            SUBJECT: self.subject,
            CONSUMER: self.consumer,
            STREAM_SEQ: str(self.stream_seq),
            ATTEMPTS: str(self.attempts),
            "Nats-Msg-Id": f"dlq-{self.consumer}-{self.stream_seq}-{self._digest()}",
        }


    def _digest(self) -> str:
        digest = hashlib.sha256(self.original_id.encode("utf-8", "backslashreplace"))
        digest.update(self.payload)
        return digest.hexdigest()[:16]


def header_safe(text: str) -> str:
    """Header values end at a line break and travel as ASCII: one line, escaped."""
    flat = " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
    return flat if len(flat) <= _MAX_REASON else flat[: _MAX_REASON - 3] + "..."


async def publish(js: JetStreamContext, letter: DeadLetter) -> None:
    await js.publish(dlq_subject(letter.consumer), letter.payload, headers=letter.headers())
