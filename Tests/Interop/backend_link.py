#!/usr/bin/python3
"""Independent checks of muster.backend.v1 with Debian's python3-websockets.

Usage: backend_link.py PORT TOKEN CASE
Prints one JSON line with what happened, e.g. {"error": "bad_credentials", "close": 4001}.
"""
import asyncio
import json
import sys

import websockets

PORT, TOKEN, CASE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
URL = f"ws://127.0.0.1:{PORT}/v1/ws"


def hello(token, role="backend", name="py-backend"):
    return json.dumps({"type": "hello", "id": "h1", "role": role, "name": name, "token": token,
                       "versions": [1], "incarnation": 1763712000000, "slots": 1})


async def closed_code(ws):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    except websockets.ConnectionClosed as e:
        return e.rcvd.code if e.rcvd else None


async def main():
    out = {}
    async with websockets.connect(URL, subprotocols=["muster.backend.v1"], max_size=None) as ws:
        if CASE == "bad_token":
            await ws.send(hello("wrong-" + TOKEN))
            out["error"] = json.loads(await ws.recv())["code"]
            out["close"] = await closed_code(ws)
        elif CASE == "client_on_backend_link":
            await ws.send(hello(TOKEN, role="client"))
            out["error"] = json.loads(await ws.recv())["code"]
            out["close"] = await closed_code(ws)
        elif CASE == "malformed_hello":
            # A hello that cannot be read ends the link at once (Protocol/README.md 6.2).
            await ws.send('{"type": "hello", ')
            out["error"] = json.loads(await ws.recv())["code"]
            out["close"] = await closed_code(ws)
        elif CASE == "report_before_hello":
            await ws.send(json.dumps({"type": "completed", "job": 1, "lease": 1, "result": {}}))
            out["error"] = json.loads(await ws.recv())["code"]
            out["close"] = await closed_code(ws)
        elif CASE == "oversize":
            await ws.send(hello(TOKEN))
            json.loads(await ws.recv())
            await ws.send('{"type":"progress","job":1,"lease":1,"fraction":0.5,"message":"' + "x" * (2 << 20) + '"}')
            out["close"] = await closed_code(ws)
        elif CASE == "unknown_type":
            await ws.send(hello(TOKEN))
            json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "teleport", "id": "t1"}))
            while True:
                m = json.loads(await ws.recv())
                if m["type"] == "error":
                    out["error"], out["id"] = m["code"], m.get("id")
                    break
            await ws.send(json.dumps({"type": "capabilities", "incarnation": 1763712000000, "revision": 1, "state": "ready",
                                      "features": ["video"], "models": {"available": [], "loaded": []}, "slots": 1}))
            while True:
                m = json.loads(await ws.recv())
                if m["type"] == "capabilities_ack":
                    out["after"] = m["type"]
                    break
    print(json.dumps(out))


asyncio.run(main())
