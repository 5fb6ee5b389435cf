#!/usr/bin/python3
"""Opens client links to a coordinator from one source address, one after another, and reports
how each was answered: the handshake's status, then `welcome`, or the `error` code and close code.

Usage: links_from_address.py PORT SOURCE_ADDRESS COUNT TOKEN
Prints one JSON object: {"links": [{"status": 101, "welcome": true} | {"status": 101, "error":
"too_many_links", "close": 4009}, ...], "after_one_closed": {...}}: once every link is answered,
the first admitted link is closed and one more is opened (retried while the coordinator may not
have seen the close yet). Written from Protocol/README.md (sections 2, 5, 7); stdlib only.
"""
import base64
import json
import os
import socket
import struct
import sys
import time

PORT, SOURCE, COUNT, TOKEN = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]


def frame(text):
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def read_frame(s):
    b0, b1 = read_exact(s, 2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", read_exact(s, 2))[0]
    elif n == 127:
        n = struct.unpack("!Q", read_exact(s, 8))[0]
    return b0 & 0x0F, read_exact(s, n)


def open_link():
    s = socket.socket()
    s.settimeout(20)
    s.bind((SOURCE, 0))
    s.connect(("127.0.0.1", PORT))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: muster.client.v1\r\n\r\n"
               % key).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    status = int(head.split(b" ")[1])
    result = {"status": status}
    if status != 101:
        return s, result
    s.sendall(frame(json.dumps({"type": "hello", "id": "h", "role": "client", "name": "flood", "token": TOKEN,
                                "versions": [1]})))
    try:
        while True:
            op, payload = read_frame(s)
            if op == 1:
                m = json.loads(payload)
                if m.get("type") == "welcome":
                    result["welcome"] = True
                    return s, result
                if m.get("type") == "error":
                    result["error"] = m.get("code")
            elif op == 8:
                result["close"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return s, result
    except (EOFError, OSError) as e:
        result["dropped"] = repr(e)
        return s, result


links = [open_link() for _ in range(COUNT)]
report = {"links": [r for _, r in links]}
admitted = [s for s, r in links if r.get("welcome")]
if admitted:
    admitted[0].close()
    for attempt in range(50):
        s, r = open_link()
        if r.get("welcome") or attempt == 49:
            report["after_one_closed"] = r
            report["attempts"] = attempt + 1
            break
        s.close()
        time.sleep(0.1)
print(json.dumps(report))
