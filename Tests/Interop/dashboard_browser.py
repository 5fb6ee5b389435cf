#!/usr/bin/python3
"""Drives the dashboard in headless Chromium over the DevTools protocol, as a person would: open
the page, wait until it shows something, click, type, look again, take a screenshot.

`chromium --dump-dom` prints the page at its load event, before a WebSocket has said anything, so
this waits for conditions instead, each checked every 200 ms and bounded by --timeout.

Usage: dashboard_browser.py URL STEPS_JSON [--screenshot-size WxH] [--timeout SECONDS]
STEPS_JSON is a list of steps, run in order:
  {"wait": "<JavaScript expression>"}     until it is truthy
  {"click": "<CSS selector>"}             the first match
  {"fill": "<CSS selector>", "value": "..."}
  {"submit": "<CSS selector of a form>"}  (requestSubmit, so the page's handler runs)
  {"dom": true}                           adds document.documentElement.outerHTML to the output
  {"screenshot": "<file.png>"}            the whole page
  {"touch": "<file>"}                     creates the file: tells the test driving this script
                                          that the steps before it are done
Prints one JSON object: {"ok": true, "dom": [...], "problems": [...]} or {"ok": false, "error": "...", ...};
"problems" lists what the page got wrong meanwhile: uncaught exceptions and errors the browser logged
(a blocked resource, a Content-Security-Policy violation).
Needs Debian's chromium and python3-websockets (Scripts/setup installs both).
"""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets


def arguments():
    args = sys.argv[1:]
    size, timeout = "1400,1000", 90.0
    if "--screenshot-size" in args:
        i = args.index("--screenshot-size")
        size = args[i + 1].replace("x", ",")
        del args[i:i + 2]
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = float(args[i + 1])
        del args[i:i + 2]
    return args[0], json.loads(args[1]), size, timeout


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.problems = []

    async def call(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        await self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            self.note(message)
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def note(self, message):
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append(details.get("exception", {}).get("description") or details.get("text"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.problems.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    async def evaluate(self, expression):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")


async def wait(page, expression, deadline, timeout):
    """Until `expression` is truthy; an exception (an element not there yet) counts as not yet."""
    last_error = None
    while True:
        try:
            if await page.evaluate(f"Boolean({expression})"):
                return
        except RuntimeError as e:
            last_error = e
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise RuntimeError(f"timed out after {timeout} s waiting for: {expression}{detail}")
        await asyncio.sleep(0.2)


def devtools_port(profile, process, deadline):
    """Chromium writes the port it picked to DevToolsActivePort in the profile."""
    path = os.path.join(profile, "DevToolsActivePort")
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} before it listened")
        try:
            with open(path, encoding="utf-8") as f:
                return int(f.readline().strip())
        except (FileNotFoundError, ValueError):
            time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port")


def page_target(port, url, deadline):
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            targets = json.load(r)
        for t in targets:
            if t.get("type") == "page" and t.get("webSocketDebuggerUrl"):
                return t["webSocketDebuggerUrl"]
        time.sleep(0.1)
    raise RuntimeError(f"no page target for {url}")


async def run(url, steps, size, timeout):
    chromium = shutil.which("chromium")
    if chromium is None:
        return {"ok": False, "error": "chromium is not installed; Scripts/setup installs it (Debian package chromium)"}
    deadline = time.monotonic() + timeout
    profile = tempfile.mkdtemp(prefix="muster-chromium-")
    process = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--hide-scrollbars", f"--window-size={size}", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = {"ok": True, "dom": []}
    page = None
    try:
        port = devtools_port(profile, process, deadline)
        async with websockets.connect(page_target(port, url, deadline), max_size=None) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Runtime.enable")
            await page.call("Log.enable")
            await page.call("Page.navigate", url=url)
            # The page, not about:blank, with its script run.
            loaded = f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
            for step in [{"wait": loaded}] + steps:
                if "wait" in step:
                    await wait(page, step["wait"], deadline, timeout)
                elif "click" in step:
                    selector = json.dumps(step["click"])
                    if not await page.evaluate(f"(() => {{ const e = document.querySelector({selector}); if (!e) return false; e.click(); return true; }})()"):
                        raise RuntimeError(f"nothing to click at {step['click']}")
                elif "fill" in step:
                    selector, value = json.dumps(step["fill"]), json.dumps(step["value"])
                    if not await page.evaluate(f"(() => {{ const e = document.querySelector({selector}); if (!e) return false; e.value = {value}; return true; }})()"):
                        raise RuntimeError(f"nothing to fill at {step['fill']}")
                elif "submit" in step:
                    selector = json.dumps(step["submit"])
                    if not await page.evaluate(f"(() => {{ const e = document.querySelector({selector}); if (!e) return false; e.requestSubmit(); return true; }})()"):
                        raise RuntimeError(f"no form at {step['submit']}")
                elif "touch" in step:
                    open(step["touch"], "w").close()
                elif "dom" in step:
                    out["dom"].append(await page.evaluate("document.documentElement.outerHTML"))
                elif "screenshot" in step:
                    shot = await page.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
                    with open(step["screenshot"], "wb") as f:
                        f.write(base64.b64decode(shot["data"]))
    except Exception as e:  # noqa: BLE001 - reported to the caller, which fails the test with it
        out["ok"] = False
        out["error"] = str(e)
        if page is not None:
            try:
                out["dom"].append(await page.evaluate("document.documentElement.outerHTML"))
            except Exception:  # noqa: BLE001 - the page may be gone; the error above says why
                pass
    finally:
        if page is not None:
            out["problems"] = page.problems
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(profile, ignore_errors=True)
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(*arguments()))))
