#!/usr/bin/python3
"""Bad input against a running coordinator, with Debian's python3-websockets as the peer.

Usage: bad_input.py PORT CASE [COUNT]
Runs one case and prints one JSON object with what happened, e.g.
{"error": "invalid_message", "message": "job: ...", "after": "capabilities_ack"}.
Cases starting with b_ use muster.backend.v1, c_ muster.client.v1; see CASES at the end.
Every wait is bounded so that a silent coordinator fails the case instead of hanging it.
"""
import asyncio
import http.client
import json
import socket
import sys
import urllib.request

import websockets
from websockets.frames import OP_TEXT

PORT, CASE = int(sys.argv[1]), sys.argv[2]
COUNT = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
URL = f"ws://127.0.0.1:{PORT}/v1/ws"
BACKEND, CLIENT = "muster.backend.v1", "muster.client.v1"
WAIT = 20
INCARNATION = 1763712000000


def backend_hello(name, role="backend"):
    return json.dumps({"type": "hello", "id": "h1", "role": role, "name": name, "token": "", "versions": [1],
                       "incarnation": INCARNATION, "slots": 1})


def client_hello(name="py-client", role="client"):
    return json.dumps({"type": "hello", "id": "h1", "role": role, "name": name, "token": "", "versions": [1]})


def capabilities(extra=""):
    return ('{"type":"capabilities","incarnation":%d,"revision":1,"state":"ready","features":["bad"],'
            '"models":{"available":[],"loaded":[]},"slots":1%s}' % (INCARNATION, extra))


def nested(depth):
    return "[" * depth + "]" * depth


async def recv(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), WAIT))


async def next_of(ws, *types):
    """The next message of one of `types`, skipping others (e.g. sync)."""
    while True:
        m = await recv(ws)
        if m["type"] in types:
            return m


async def close_code(ws):
    """Reads until the coordinator closes; the code it sent."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), WAIT)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def connect(subprotocol):
    return await websockets.connect(URL, subprotocols=[subprotocol], max_size=None, open_timeout=WAIT,
                                    close_timeout=WAIT, ping_interval=None)


async def registered_backend(name):
    ws = await connect(BACKEND)
    await ws.send(backend_hello(name))
    welcome = await next_of(ws, "welcome", "error")
    assert welcome["type"] == "welcome", welcome
    return ws


async def registered_client():
    ws = await connect(CLIENT)
    await ws.send(client_hello())
    welcome = await next_of(ws, "welcome", "error")
    assert welcome["type"] == "welcome", welcome
    return ws


def error_fields(m):
    return {"reply": m["type"], "error": m.get("code"), "message": m.get("message"), "id": m.get("id")}


async def backend_error_then_alive(text):
    """On a registered backend link: send `text`, report the error, then check the link still
    carries a capabilities announcement."""
    ws = await registered_backend("bad-" + CASE.replace("_", "-"))
    await ws.send(text)
    out = error_fields(await next_of(ws, "error", "capabilities_ack", "stale_lease"))
    await ws.send(capabilities())
    out["after"] = (await next_of(ws, "capabilities_ack"))["type"]
    await ws.close()
    return out


async def client_error_then_alive(text):
    """On a registered client link: send `text`, report the answer, then check the link still
    answers a status request."""
    ws = await registered_client()
    await ws.send(text)
    m = await next_of(ws, "error", "accepted", "status_report")
    out = error_fields(m)
    if m["type"] == "accepted":
        out["jobs"] = m["jobs"]
    await ws.send(json.dumps({"type": "status", "id": "alive"}))
    out["after"] = (await next_of(ws, "status_report"))["type"]
    await ws.close()
    return out


async def closed_after(subprotocol, send, registered=True):
    """Sends something that ends the link; reports the close code (and any error before it)."""
    if registered:
        ws = await (registered_backend("bad-" + CASE.replace("_", "-")) if subprotocol == BACKEND else registered_client())
    else:
        ws = await connect(subprotocol)
    await send(ws)
    out = {}
    try:
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
            if m["type"] == "error":
                out.update(error_fields(m))
    except websockets.ConnectionClosed as e:
        out["close"] = e.rcvd.code if e.rcvd else None
    return out


def text(s):
    async def send(ws):
        await ws.send(s)
    return send


async def invalid_utf8(ws):
    # A text frame whose payload is not UTF-8: the library would not send it, so write the frame.
    await ws.write_frame(True, OP_TEXT, b'{"type":"status","id":"\xc3\x28"}')


async def binary(ws):
    await ws.send(b'{"type":"status","id":"b1"}')


OVERSIZE = '{"type":"status","id":"big","pad":"' + "x" * (2 << 20) + '"}'


def http_get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=WAIT) as r:
        return r.status, r.read().decode()


async def stalled_handshake():
    """A TCP connection that sends half an upgrade request and then nothing, and a WebSocket that
    never says hello: both are dropped by the coordinator after its handshake timeout."""
    def half_upgrade():
        s = socket.create_connection(("127.0.0.1", PORT), timeout=WAIT)
        s.settimeout(WAIT * 2)
        s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        try:
            eof = s.recv(4096) == b""
        except (ConnectionResetError, TimeoutError, socket.timeout) as e:
            eof = type(e).__name__
        s.close()
        return eof

    async def silent(subprotocol):
        ws = await connect(subprotocol)
        m = await next_of(ws, "error")
        return {"error": m["code"], "close": await close_code(ws)}

    loop = asyncio.get_running_loop()
    eof, backend, client = await asyncio.gather(
        loop.run_in_executor(None, half_upgrade), silent(BACKEND), silent(CLIENT))
    return {"eof": eof, "backend": backend, "client": client}


async def storm():
    """COUNT client links opened at once, each saying hello; every one must be welcomed or
    refused cleanly (an HTTP status or a close code), never hang or reset. While all are open the
    coordinator must still answer /healthz."""
    outcomes = {}
    open_links = []

    async def one(i):
        try:
            ws = await websockets.connect(URL, subprotocols=[CLIENT], open_timeout=60, close_timeout=60,
                                          ping_interval=None)
        except websockets.InvalidStatusCode as e:
            return f"refused_http_{e.status_code}"
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            return f"failed_{type(e).__name__}"
        try:
            await ws.send(client_hello(name=f"storm-{i}"))
            m = await next_of(ws, "welcome", "error")
            if m["type"] != "welcome":
                return f"refused_{m['code']}"
            open_links.append(ws)
            return "welcomed"
        except websockets.ConnectionClosed as e:
            return f"closed_{e.rcvd.code if e.rcvd else None}"
        except Exception as e:  # noqa: BLE001
            return f"failed_{type(e).__name__}"

    results = await asyncio.gather(*(one(i) for i in range(COUNT)))
    for r in results:
        outcomes[r] = outcomes.get(r, 0) + 1
    loop = asyncio.get_running_loop()
    health, _ = await loop.run_in_executor(None, http_get, "/healthz")
    _, metrics = await loop.run_in_executor(None, http_get, "/metrics")
    links_open = None
    for line in metrics.splitlines():
        if line.startswith("muster_links_open "):
            links_open = float(line.split()[1])
    # Every link still answers while the others are open: one status round trip each.
    alive = 0
    for ws in open_links:
        try:
            await ws.send(json.dumps({"type": "status", "id": "s"}))
        except websockets.ConnectionClosed:
            pass
    for ws in open_links:
        try:
            if (await next_of(ws, "status_report"))["type"] == "status_report":
                alive += 1
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass
    await asyncio.gather(*(ws.close() for ws in open_links), return_exceptions=True)
    return {"outcomes": outcomes, "healthz": health, "links_open": links_open, "answered": alive}


async def browser_pages():
    """A web page in the operator's browser: a WebSocket from another origin, on either side, and a
    cross-origin POST are refused (forbidden: close 4007, HTTP 403), and so is a request that
    addresses the coordinator by a name that is not loopback's (DNS rebinding). A page of the
    coordinator's own origin links as usual."""
    out = {}
    for side, subprotocol in (("backend", BACKEND), ("client", CLIENT)):
        ws = await websockets.connect(URL, subprotocols=[subprotocol], origin="https://evil.example",
                                      open_timeout=WAIT, close_timeout=WAIT, ping_interval=None)
        m = await next_of(ws, "error")
        out[side] = {"error": m["code"], "close": await close_code(ws)}
    ws = await websockets.connect(URL, subprotocols=[CLIENT], origin=f"http://127.0.0.1:{PORT}",
                                  open_timeout=WAIT, close_timeout=WAIT, ping_interval=None)
    await ws.send(client_hello(name="own-page"))
    out["own_origin"] = (await next_of(ws, "welcome", "error"))["type"]
    await ws.close()

    def request(method, path, headers, body=None):
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=WAIT)
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return {"status": r.status, "code": json.loads(data).get("code")}

    out["cross_origin_post"] = request(
        "POST", "/v1/batches", {"Origin": "https://evil.example", "Content-Type": "text/plain"},
        '{"jobs": [{"kind": "image"}]}')
    out["rebinding_get"] = request("GET", "/v1/backends", {"Host": f"evil.example:{PORT}"})
    # The dashboard's page too: loaded under a rebound name it would talk to this coordinator.
    out["rebinding_dashboard"] = request("GET", "/", {"Host": f"evil.example:{PORT}"})
    return out


CASES = {
    # --- muster.backend.v1, registered link ---
    "b_malformed": lambda: backend_error_then_alive('{"type": "progress", "job": 1,'),
    "b_wrong_type": lambda: backend_error_then_alive('{"type":"progress","job":"1017","lease":73,"fraction":0.5}'),
    "b_missing": lambda: backend_error_then_alive('{"type":"progress","job":1017,"fraction":0.5}'),
    "b_unknown_field": lambda: backend_error_then_alive(capabilities(',"colour":"blue","extra":{"a":[1,2]}')),
    "b_unknown_type": lambda: backend_error_then_alive('{"type":"teleport","id":"t1","job":1}'),
    "b_uint64_overflow": lambda: backend_error_then_alive('{"type":"started","job":18446744073709551616,"lease":1}'),
    "b_huge_exponent": lambda: backend_error_then_alive('{"type":"progress","job":1,"lease":1,"fraction":1e400}'),
    "b_long_string": lambda: backend_error_then_alive(
        '{"type":"progress","job":1,"lease":1,"fraction":0.5,"message":"' + "m" * 5000 + '"}'),
    "b_deep": lambda: backend_error_then_alive('{"type":"completed","job":1,"lease":1,"result":' + nested(80) + '}'),
    "b_invalid_utf8": lambda: closed_after(BACKEND, invalid_utf8),
    "b_binary": lambda: closed_after(BACKEND, binary),
    "b_oversize": lambda: closed_after(BACKEND, text(OVERSIZE)),
    "b_second_hello": lambda: closed_after(BACKEND, text(backend_hello("bad-b-second-hello"))),
    # --- muster.backend.v1, before hello ---
    "b_report_before_hello": lambda: closed_after(
        BACKEND, text('{"type":"completed","job":1,"lease":1,"result":{"stolen":true}}'), registered=False),
    "b_client_hello": lambda: closed_after(BACKEND, text(client_hello()), registered=False),
    # --- muster.client.v1, registered link ---
    "c_malformed": lambda: client_error_then_alive('{"type": "submit", "id": "r0", "jobs": [}'),
    "c_wrong_type": lambda: client_error_then_alive('{"type":"submit","id":"r1","jobs":[{"kind":"image","count":"four"}]}'),
    "c_missing": lambda: client_error_then_alive('{"type":"submit","id":"r2"}'),
    "c_unknown_field": lambda: client_error_then_alive('{"type":"status","id":"r3","colour":"blue","extra":{"a":1}}'),
    "c_unknown_type": lambda: client_error_then_alive('{"type":"teleport","id":"r4"}'),
    "c_backend_message": lambda: client_error_then_alive('{"type":"completed","id":"r5","job":1,"lease":1,"result":{}}'),
    "c_uint64_overflow": lambda: client_error_then_alive(
        '{"type":"submit","id":"r6","jobs":[{"kind":"image","priority":18446744073709551616}]}'),
    "c_huge_exponent": lambda: client_error_then_alive('{"type":"submit","id":"r7","jobs":[{"kind":"image","count":1e400}]}'),
    "c_opaque_numbers": lambda: client_error_then_alive(
        '{"type":"submit","id":"r8","jobs":[{"kind":"image","params":{"big":1e400,"huge":18446744073709551616}}]}'),
    "c_long_string": lambda: client_error_then_alive('{"type":"submit","id":"r9","owner":"' + "o" * 200 + '","jobs":[{"kind":"image"}]}'),
    "c_deep": lambda: client_error_then_alive(
        '{"type":"submit","id":"r10","jobs":[{"kind":"image","params":{"p":' + nested(80) + '}}]}'),
    "c_invalid_utf8": lambda: closed_after(CLIENT, invalid_utf8),
    "c_binary": lambda: closed_after(CLIENT, binary),
    "c_oversize": lambda: closed_after(CLIENT, text(OVERSIZE)),
    # --- muster.client.v1, before hello ---
    "c_request_before_hello": lambda: closed_after(CLIENT, text('{"type":"status","id":"early"}'), registered=False),
    "c_backend_hello": lambda: closed_after(CLIENT, text(backend_hello("gpu-box")), registered=False),
    # --- connections ---
    "stalled_handshake": stalled_handshake,
    "browser_pages": browser_pages,
    "storm": storm,
}


async def main():
    try:
        out = await CASES[CASE]()
    except Exception as e:  # noqa: BLE001 - the Swift side prints it
        out = {"exception": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


asyncio.run(main())
