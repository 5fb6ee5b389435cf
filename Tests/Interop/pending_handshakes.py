#!/usr/bin/python3
"""Holds COUNT TCP connections to a coordinator from SOURCE_ADDRESS without saying anything (each
one a handshake left pending), and reports which the coordinator closed at once; meanwhile a
request from 127.0.0.1 is answered; then, with those closed, SOURCE_ADDRESS is served again.

Usage: pending_handshakes.py PORT SOURCE_ADDRESS COUNT
Prints {"closed": n, "held": n, "other_address_status": 200, "after_status": 200}. Stdlib only.
"""
import json
import select
import socket
import sys
import time

PORT, SOURCE, COUNT = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


def get_healthz(source):
    s = socket.socket()
    s.settimeout(20)
    s.bind((source, 0))
    s.connect(("127.0.0.1", PORT))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    s.close()
    return int(data.split(b" ")[1]) if data.startswith(b"HTTP/1.1") else 0


held = []
for _ in range(COUNT):
    s = socket.socket()
    s.bind((SOURCE, 0))
    s.connect(("127.0.0.1", PORT))
    held.append(s)

# A connection the coordinator closed becomes readable (end of file or reset) right away; a held one
# only when its handshake times out, long after this bound.
closed = set()
deadline = time.monotonic() + 8
while time.monotonic() < deadline and len(closed) < COUNT:
    ready, _, _ = select.select([s for s in held if s not in closed], [], [], 0.2)
    for s in ready:
        try:
            if s.recv(1) == b"":
                closed.add(s)
        except OSError:
            closed.add(s)
report = {"closed": len(closed), "held": COUNT - len(closed), "other_address_status": get_healthz("127.0.0.1")}
for s in held:
    s.close()
status = 0
for attempt in range(50):
    status = get_healthz(SOURCE)
    if status == 200:
        break
    time.sleep(0.1)
report["after_status"] = status
print(json.dumps(report))
