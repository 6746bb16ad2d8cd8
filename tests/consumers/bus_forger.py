"""A compromised collector's forgeries, sent by an unprivileged process.

Stdlib only (run by /usr/bin/python3 as nobody, who cannot read the venv):
speaks the NATS text protocol itself. argv: HOST PORT USER PASSWORD; stdin:
JSON lines {"subject", "id" (or null), "payload_hex"}; each is published with
a reply inbox, and the JetStream answer to the i-th (its PubAck, or an error)
is printed as {"i": i, "answer": {...}}; a server -ERR as {"error": ...}.
"""

from __future__ import annotations

import json
import socket
import sys


def main() -> int:
    host, port, user, password = sys.argv[1:5]
    sock = socket.create_connection((host, int(port)), timeout=10)
    f = sock.makefile("rwb")
    f.readline()  # INFO
    connect = {"user": user, "pass": password, "headers": True, "verbose": False,
               "pedantic": False, "protocol": 1}
    f.write(b"CONNECT " + json.dumps(connect).encode() + b"\r\nSUB _INBOX.forge.* 1\r\n")
    forged = [json.loads(line) for line in sys.stdin if line.strip()]
    for i, m in enumerate(forged):
        head = b"NATS/1.0\r\n"
        if m["id"] is not None:
            head += b"Nats-Msg-Id: " + m["id"].encode() + b"\r\n"
        head += b"\r\n"
        payload = bytes.fromhex(m["payload_hex"])
        f.write(f"HPUB {m['subject']} _INBOX.forge.{i} {len(head)} "
                f"{len(head) + len(payload)}\r\n".encode() + head + payload + b"\r\n")
    f.write(b"PING\r\n")
    f.flush()
    answers = 0
    sock.settimeout(3)  # a message the server drops (a subject it refuses) gets no answer
    while answers < len(forged):
        try:
            line = f.readline()
        except TimeoutError:
            print(json.dumps({"error": f"{len(forged) - answers} messages got no answer"}))
            return 0
        if not line:
            print(json.dumps({"error": "connection closed"}), flush=True)
            return 1
        if line.startswith(b"MSG"):
            parts = line.split()
            body = f.read(int(parts[-1]) + 2)[:-2]
            index = int(parts[1].rsplit(b".", 1)[1])
            print(json.dumps({"i": index, "answer": json.loads(body)}), flush=True)
            answers += 1
        elif line.startswith(b"-ERR"):
            print(json.dumps({"error": line.decode().strip()}), flush=True)
            answers += 1
        elif line.startswith(b"PING"):
            f.write(b"PONG\r\n")
            f.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
