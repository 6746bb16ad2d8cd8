"""Who may do what on the bus: one NATS user per role, and its subject permissions.

The one place the permissions are written: `snoopbus up` renders them into
its nats-server config, and proto/SECURITY.md's example is this module's
output (tests/app/test_security_doc.py checks that and runs it as written).

Roles: a collector per host (publishes its own host's events and meta), a
consumer per durable (pulls and acks only its own durables, publishes only
its own outputs and dead letters), a reader (`tail`, `doctor --nats`, `up`'s
view: reads, creates short-lived consumers, never touches a durable, never
publishes), and an admin (creates the stream; no limit).

NATS wildcards match whole tokens and consumer names hold no dot, so what a
reader may not do to durables is a deny list naming every durable of the
config: a durable created outside it is not protected from readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from snoopbus.proto.subjects import (
    STREAM_NAME,
    alerts_filter,
    dlq_subject,
    events_filter,
    host_token,
    meta_filter,
)

API = "$JS.API"
S = STREAM_NAME
# Every JetStream client looks the account and the stream up first.
LOOKUP = (f"{API}.INFO", f"{API}.STREAM.INFO.{S}")
# What the rename pairer publishes (consumers/rename.py OUTPUT_TYPES).
RENAME_OUTPUTS = ("renamed", "moved_in", "moved_out")
# Its short-lived consumer reading back its own outputs at start: a fixed name,
# so that its permissions name it.
RECALL_SUFFIX = "-recall"


@dataclass(frozen=True)
class Role:
    name: str  # the NATS user name, and the credentials file's stem
    publish: tuple[str, ...] = ()
    deny_publish: tuple[str, ...] = ()
    subscribe: tuple[str, ...] = ()  # besides its own replies (inbox_prefix)
    durables: tuple[str, ...] = ()  # the consumers it owns
    admin: bool = False  # no permissions block: everything

    @property
    def inbox_prefix(self) -> str:
        """Its clients' reply subjects: its own, so that no other role reads them
        (under _INBOX.> a collector would see every delivery to every consumer)."""
        return inbox_prefix(self.name)

    def permissions(self) -> str:
        """This role's `permissions` value in nats-server config syntax."""
        pub = f"allow: {_list(self.publish)}"
        if self.deny_publish:
            pub += f"\n        deny: {_list(self.deny_publish)}"
        return (f"{{\n      publish: {{\n        {pub}\n      }}\n"
                f"      subscribe: {{ allow: {_list(self.subscribe_allowed())} }}\n    }}")

    def subscribe_allowed(self) -> tuple[str, ...]:
        return (*self.subscribe, f"{self.inbox_prefix}.>")


def inbox_prefix(role: str) -> str:
    return f"_INBOX_{role}"


def _list(subjects: Iterable[str]) -> str:
    items = [f'"{s}"' for s in subjects]
    if len(items) <= 2:
        return "[" + ", ".join(items) + "]"
    return "[\n          " + ",\n          ".join(items) + "\n        ]"


def own_durable(durable: str) -> tuple[str, ...]:
    """Create, look up, pull from and ack one durable: nothing about any other."""
    c = f"{API}.CONSUMER"
    return (f"{c}.INFO.{S}.{durable}", f"{c}.CREATE.{S}.{durable}",
            f"{c}.CREATE.{S}.{durable}.>", f"{c}.DURABLE.CREATE.{S}.{durable}",
            f"{c}.MSG.NEXT.{S}.{durable}", f"$JS.ACK.{S}.{durable}.>")  # fmt: skip


def collector(host: str) -> Role:
    # Exactly the published shapes: the stream inserts a bucket token into what it
    # stores, and a subject of another length could come out in another host's shape.
    h = host_token(host)
    return Role(f"collector-{h}", (events_filter(h), meta_filter(h), *LOOKUP))


def consumer(name: str, outputs: Sequence[str] = (), durables: Sequence[str] = (),
             host: str = "*") -> Role:
    """The consumer `name` with its durables (default: the one named as it),
    publishing `outputs` and the dead letters of each durable; `host`: whose
    collectors the alerter watches."""
    owned = tuple(durables) or (name,)
    publish = [*LOOKUP]
    for d in owned:
        publish += own_durable(d)
    publish += [*outputs, *(dlq_subject(d) for d in owned)]
    if name == "rename":  # its recall consumer, deleted when read
        recall = f"{owned[0]}{RECALL_SUFFIX}"
        owned += (recall,)
        publish += [*own_durable(recall), f"{API}.CONSUMER.DELETE.{S}.{recall}"]
    if name == "forward":  # asks whether a rename pairer has a durable
        publish.append(f"{API}.CONSUMER.LIST.{S}")
    subscribe: tuple[str, ...] = ()
    if name == "alert":  # host health: the collectors' reports, live and their last stored
        subscribe = (meta_filter(host),)
        publish.append(f"{API}.STREAM.MSG.GET.{S}")
    return Role(name, tuple(publish), durables=owned, subscribe=subscribe)


def builtin_outputs(name: str, host: str) -> tuple[str, ...]:
    """What a built-in consumer publishes for `host` ("*": any host)."""
    if name == "rename":
        return tuple(events_filter(host, type=t) for t in RENAME_OUTPUTS)
    if name == "alert":
        return (alerts_filter(host),)
    return ()


def reader(protected: Iterable[str]) -> Role:
    """Reads everything, creates and deletes its own short-lived consumers;
    every durable in `protected` is out of its reach (no pull, no create or
    update, no delete), it acks nothing and publishes no subject of the stream."""
    c = f"{API}.CONSUMER"
    deny = [s for d in protected for s in (f"{c}.CREATE.{S}.{d}", f"{c}.CREATE.{S}.{d}.>",
                                           f"{c}.MSG.NEXT.{S}.{d}", f"{c}.DELETE.{S}.{d}")]
    publish = (*LOOKUP, f"{c}.INFO.{S}.*", f"{c}.LIST.{S}", f"{c}.NAMES.{S}",
               f"{API}.STREAM.MSG.GET.{S}", f"{c}.CREATE.{S}.*", f"{c}.CREATE.{S}.*.>",
               f"{c}.MSG.NEXT.{S}.*", f"{c}.DELETE.{S}.*")
    return Role("reader", publish, tuple(deny), subscribe=("snoopbus.>",))


def admin() -> Role:
    return Role("admin", admin=True)


def stack_roles(host: str, consumers: Sequence[tuple[str, Sequence[str]]]) -> list[Role]:
    """The roles of a stack: `consumers` is (name, durables) for each consumer."""
    roles = [collector(host)]
    roles += [consumer(n, builtin_outputs(n, host), d, host) for n, d in consumers]
    protected = [d for r in roles for d in r.durables]
    return [*roles, reader(protected), admin()]


def render(users: Sequence[tuple[Role, str]]) -> str:
    """A nats-server config with JetStream and these users; each pairs a role
    with its credential (`nkey: U...` or `user: NAME, password: ...`)."""
    lines = []
    for role, credential in users:
        if role.admin:
            lines.append(f"    {{ {credential} }}")
        else:
            lines.append(f"    {{ {credential},\n      permissions: {role.permissions()} }}")
    return ("jetstream: enabled\n\nauthorization {\n  users: [\n"
            + "\n".join(lines) + "\n  ]\n}\n")


def password_env(role: Role) -> str:
    return "SNOOPBUS_" + role.name.upper().replace("-", "_") + "_PASSWORD"


def doc_example() -> str:
    """proto/SECURITY.md's config: host web1, the built-in consumers, a forwarder
    with one sink (`siem`), the reader and the admin; passwords from the server's
    environment."""
    wanted = stack_roles("web1", [("rename", ()), ("alert", ()), ("archive", ()),
                                  ("forward", ("forward", "forward-siem"))])
    return render([(r, f"user: {r.name}, password: ${password_env(r)}") for r in wanted])
