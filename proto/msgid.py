"""Nats-Msg-Id: the stream's dedup key, namespaced by host and unguessable.

JetStream drops a message whose Nats-Msg-Id it saw within the duplicate
window, whatever its subject: the window is per stream. An id another
publisher can guess is therefore a way to suppress that publisher's next
message (publish it first). So every id a snoopbus process sets is

    <host token>.<rest>

where <host token> is the host token of the subject the message is published
on (a collector's own, or the host an alert or a rename output is about),
and consumers dead-letter a message whose id starts with another host's token
(`id_host`). A collector's ids (`MessageIds`) are

    <host token>.<run>.<seq>.<nonce>+<count>

run: 8 random hex digits per publisher run; seq: 1, 2, ... in that run;
nonce: 16 random hex digits (secrets) per message, so that even one who has
read every earlier id cannot name the next; count: the events in the message
(0 for a report; a reader's hint only: the publisher counts what it sent). An id is
made once per message and kept with it (retries, the spill), so a retry is
dropped as the duplicate it is.
"""

from __future__ import annotations

import secrets
from typing import Final

from snoopbus.proto.subjects import subject_host

ID_HEADER: Final = "Nats-Msg-Id"
# Room an id takes beyond its host token: ".<run>.<seq>.<nonce>+<count>" and spare.
ID_ROOM: Final = 64


class MessageIds:
    """The ids of one publisher run."""

    def __init__(self) -> None:
        self.run = secrets.token_hex(4)
        self._seq = 0

    def new(self, subject: str, count: int) -> str:
        """A fresh id for a message of `count` events to `subject` (a concrete subject)."""
        self._seq += 1
        return f"{subject_host(subject)}.{self.run}.{self._seq}.{secrets.token_hex(8)}+{count}"


def derived_id(host_tok: str, kind: str, key: str) -> str:
    """The id of a message derived from others (an alert, a rename output): the
    same input gives the same id, so a consumer's retry is dropped as a duplicate."""
    return f"{host_tok}.{kind}:{key}"


def id_host(msg_id: str) -> str:
    """The host token an id claims ("" for one without a '.')."""
    host, dot, _ = msg_id.partition(".")
    return host if dot else ""


def id_belongs(msg_id: str | None, host_tok: str) -> bool:
    """Whether a message on `host_tok`'s subject may carry this id. A message
    without one (a third-party publisher) collides with nothing and passes."""
    return msg_id is None or id_host(msg_id) == host_tok

