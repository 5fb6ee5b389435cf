"""The wire-only conformance harness: a real `muster serve`, raw peers, and a checker for every
message the daemon sends.

Everything here is written from Protocol/README.md, the JSON Schemas in Protocol/schemas/ and the
top-level README.md, never from the daemon's source: the suite is what a third party would write.
Needs Debian's python3-websockets (10.x legacy asyncio API) and python3-jsonschema.

Checks are soft: a broken rule is recorded with the rule it breaks (`Ctx.check`) and the scenario
goes on, so one run names every difference. A scenario stops early only when it cannot go on
(`Ctx.require`, or a message that never came within the generous bound `WAIT`).
"""
import asyncio
import atexit
import base64
import http.client
import json
import os
import tempfile
import re
import shutil
import signal
import socket
import struct
import time

import jsonschema
import websockets

# Every job store and file a scenario writes lives under one folder, removed when the run ends.
SCRATCH = tempfile.mkdtemp(prefix="muster-conformance-")
atexit.register(shutil.rmtree, SCRATCH, True)


def scratch(prefix):
    """A fresh folder for one scenario's files, inside SCRATCH."""
    return tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SCHEMAS = os.path.join(ROOT, "Protocol", "schemas")
SPEC = os.path.join(ROOT, "Protocol", "README.md")
BACKEND, CLIENT = "muster.backend.v1", "muster.client.v1"
# Generous bound for anything we wait on; no check depends on how fast it comes.
WAIT = float(os.environ.get("CONFORMANCE_WAIT", "30"))
CODE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ScenarioStop(Exception):
    """The scenario cannot go on; the message says why."""


# ---------------------------------------------------------------------------------------------
# Schemas and the spec's tables


def _load_store():
    store = {}
    for folder, _, files in os.walk(SCHEMAS):
        for name in files:
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    schema = json.load(f)
                store[os.path.relpath(os.path.join(folder, name), SCHEMAS).replace(os.sep, "/")] = schema
    return store


class Schemas:
    """Validators for the channel unions and for each message type and HTTP body."""

    def __init__(self):
        self.store = _load_store()
        self.by_id = {s["$id"]: s for s in self.store.values()}
        self._validators = {}

    def validator(self, rel):
        if rel not in self._validators:
            schema = self.store[rel]
            try:
                from referencing import Registry, Resource  # jsonschema >= 4.18

                registry = Registry().with_resources(
                    [(uri, Resource.from_contents(s)) for uri, s in self.by_id.items()])
                v = jsonschema.Draft202012Validator(schema, registry=registry)
            except ImportError:
                resolver = jsonschema.RefResolver.from_schema(schema, store=self.by_id)
                v = jsonschema.Draft202012Validator(schema, resolver=resolver)
            self._validators[rel] = v
        return self._validators[rel]

    def def_errors(self, name, instance):
        """Schema errors of `instance` against defs.json's `$defs/NAME`."""
        key = "defs#" + name
        if key not in self._validators:
            schema = {"$ref": self.store["defs.json"]["$id"] + "#/$defs/" + name}
            self.store[key] = schema
            self._validators[key] = None
            try:
                from referencing import Registry, Resource  # jsonschema >= 4.18

                registry = Registry().with_resources(
                    [(uri, Resource.from_contents(s)) for uri, s in self.by_id.items()])
                self._validators[key] = jsonschema.Draft202012Validator(schema, registry=registry)
            except ImportError:
                resolver = jsonschema.RefResolver.from_schema(schema, store=self.by_id)
                self._validators[key] = jsonschema.Draft202012Validator(schema, resolver=resolver)
        return [e.message[:300] for e in self._validators[key].iter_errors(instance)]

    def errors(self, rel, instance):
        """Human-readable schema errors of `instance` against `rel`; for a channel union, the
        errors of the message type's own schema (the union only says "matches none")."""
        errs = list(self.validator(rel).iter_errors(instance))
        if not errs:
            return []
        if rel.endswith("-out.json") or rel.endswith("-in.json"):
            channel = rel.split("-")[0]
            t = instance.get("type") if isinstance(instance, dict) else None
            for folder in (channel, "common"):
                specific = "%s/%s.json" % (folder, t)
                if specific in self.store and specific in (r["$ref"] for r in self.store[rel]["oneOf"]):
                    errs = list(self.validator(specific).iter_errors(instance)) or errs
                    break
            else:
                return ["type %r is not a message of %s" % (t, rel)]
        return ["%s: %s" % ("/".join(str(p) for p in e.absolute_path) or "(top)", e.message[:300]) for e in errs[:3]]


def spec_error_codes():
    """The codes of section 5's table in Protocol/README.md."""
    with open(SPEC, encoding="utf-8") as f:
        text = f.read()
    start = text.index("## 5.")
    end = text.index("## 6.")
    return set(re.findall(r"^\| `([a-z_0-9]+)` \|", text[start:end], re.M))


SCHEMA = Schemas()
SPEC_CODES = spec_error_codes()


class _Fraction(str):
    """A JSON number written with a fraction or an exponent (kept as its text)."""


def fractional_numbers(raw, path="", value=None, opaque=("params", "result", "details")):
    """Paths of numbers written with a fraction or exponent outside opaque values, other than the
    two members that are fractions by nature (section 2: integers are written as `17`)."""
    if value is None:
        value = json.loads(raw, parse_float=_Fraction)
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = "%s.%s" % (path, k) if path else k
            if isinstance(v, _Fraction) and k not in ("progress", "fraction"):
                out.append("%s = %s" % (p, v))
            elif k not in opaque:
                out += fractional_numbers(None, p, v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if isinstance(v, _Fraction):
                out.append("%s[%d] = %s" % (path, i, v))
            else:
                out += fractional_numbers(None, "%s[%d]" % (path, i), v)
    return out


def nulls(value, path="", opaque=("params", "result", "details")):
    """Paths of `null` members outside opaque values (optional members are omitted, never null)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            p = "%s.%s" % (path, k) if path else k
            if v is None:
                out.append(p)
            elif k not in opaque:
                out += nulls(v, p, opaque)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += nulls(v, "%s[%d]" % (path, i), opaque)
    return out


def revisions(value, path=""):
    """(path, revision) of every capability version in a message or body."""
    out = []
    if isinstance(value, dict):
        if "incarnation" in value and "revision" in value:
            out.append((path or "(top)", value["revision"]))
        for k, v in value.items():
            if k not in ("params", "result", "details"):
                out += revisions(v, "%s.%s" % (path, k) if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += revisions(v, "%s[%d]" % (path, i))
    return out


# ---------------------------------------------------------------------------------------------
# The scenario context


class Ctx:
    """One scenario's checks, daemons and peers."""

    def __init__(self, name, muster):
        self.name = name
        self.muster = muster
        self.failures = []
        self.daemons = []
        self.peers = []
        self.notes = []

    def check(self, cond, rule, message):
        if not cond:
            self.failures.append("[%s] %s" % (rule, message))
        return bool(cond)

    def require(self, cond, rule, message):
        if not cond:
            raise ScenarioStop("[%s] %s" % (rule, message))

    async def daemon(self, settings=None, backends=None):
        d = Daemon(self, settings or {}, backends or [])
        self.daemons.append(d)
        await d.start()
        return d

    async def close(self):
        for p in self.peers:
            try:
                await p.final_checks()
            except ScenarioStop as e:
                self.failures.append(str(e))
            await p.abort()
        for d in self.daemons:
            await d.stop()


# ---------------------------------------------------------------------------------------------
# The daemon

# Settings every scenario starts from: no local backends, and every timer long enough that it
# never fires unless the scenario shortens it on purpose.
BASE_SETTINGS = {
    "gate.window_seconds": "0",
    "links.suspect_grace_seconds": "600",
    "links.sync_interval_seconds": "3600",
    "links.keepalive_seconds": "600",
    "links.handshake_timeout_seconds": "600",
    "routing.inhibit_after_failure_seconds": "0",
}


STARTED = set()  # daemons of this run still alive: killed when the script is terminated


def _die_with_parent():
    """In the daemon's child process: SIGTERM when this script dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def terminate_started(*_):
    for proc in list(STARTED):
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    shutil.rmtree(SCRATCH, True)
    os._exit(2)


class Daemon:
    def __init__(self, ctx, settings, backends):
        self.ctx = ctx
        self.settings = dict(BASE_SETTINGS)
        self.settings.update({k: str(v) for k, v in settings.items()})
        self.settings["backends"] = json.dumps(backends)
        self.proc = None
        self.port = None
        self.log = []
        self.leases = {}  # job -> leases of its assigns, in order

    async def start(self):
        args = [self.ctx.muster, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug"]
        for k, v in self.settings.items():
            args += ["--set", "%s=%s" % (k, v)]
        env = dict(os.environ, SWIFT_BACKTRACE="enable=no")
        # Each scenario starts from an empty job store of its own (README "Durable jobs").
        if "store.url" not in self.settings:
            state = scratch("store-")
            env["MUSTER_STORE_URL"] = "sqlite://%s/muster.sqlite" % state
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, preexec_fn=_die_with_parent)
        STARTED.add(self.proc)
        found = asyncio.get_running_loop().create_future()

        async def read():
            while True:
                line = await self.proc.stderr.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace").rstrip("\n")
                self.log.append(text)
                if not found.done():
                    try:
                        obj = json.loads(text)
                    except ValueError:
                        continue
                    if obj.get("msg") == "muster serving" or obj.get("message") == "muster serving":
                        found.set_result(int(obj["listen.port"]))
            if not found.done():
                found.set_exception(ScenarioStop("muster serve exited before serving: %s" % self.log[-5:]))

        self.reader = asyncio.ensure_future(read())
        self.port = await asyncio.wait_for(found, WAIT * 2)
        self.url = "ws://127.0.0.1:%d/v1/ws" % self.port

    async def stop(self):
        if self.proc and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), WAIT)
            except asyncio.TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self.proc:
            STARTED.discard(self.proc)
            try:
                await asyncio.wait_for(self.reader, 5)
            except (asyncio.TimeoutError, Exception):
                pass

    async def kill(self):
        """SIGKILL, as a crash would: no goodbye, no close frames, nothing flushed."""
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self.proc:
            STARTED.discard(self.proc)

    # --- peers

    async def backend(self, name=None, **kw):
        p = Peer(self.ctx, self, BACKEND, name or "b", **kw)
        await p.connect([BACKEND])
        return p

    async def client(self, name="cl"):
        p = Peer(self.ctx, self, CLIENT, name)
        await p.connect([CLIENT])
        return p

    async def ready_backend(self, name, features=(), models=(), slots=1, incarnation=None):
        """A backend registered and announced `ready` (revision 1)."""
        b = await self.backend(name, incarnation=incarnation)
        await b.hello(slots=slots)
        await b.announce("ready", features, models=models, slots=slots)
        return b

    async def subscribed_client(self, name="cl"):
        c = await self.client(name)
        await c.hello()
        await c.request({"type": "subscribe"}, "subscribed")
        return c

    # --- HTTP

    async def http(self, method, path, body=None, schema=None, headers=None, expect=None, rule="8"):
        """One HTTP request; the body is validated against `schema` (2xx) or the error body
        (4xx/5xx). Returns (status, headers, parsed body or text)."""
        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT)
            h = {"Content-Type": "application/json"} if body is not None else {}
            h.update(headers or {})
            data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            conn.close()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, raw
        status, hdrs, raw = await asyncio.to_thread(run)
        what = "%s %s" % (method, path)
        parsed = raw.decode("utf-8", "replace")
        if "json" in hdrs.get("content-type", ""):
            try:
                parsed = json.loads(raw)
            except ValueError:
                self.ctx.check(False, "2 framing", "%s: body is not JSON: %r" % (what, raw[:200]))
        if expect is not None:
            self.ctx.check(status == expect, rule, "%s: status %d, spec says %d (body %s)" % (what, status, expect, str(parsed)[:300]))
        if path == "/readyz":
            schema = "http/readiness.json"  # 503 while not ready carries the readiness body, not an error
        if status >= 400 and path != "/readyz":
            self.ctx.check(isinstance(parsed, dict), "5 error shape", "%s: %d without a JSON error body: %r" % (what, status, parsed))
            if isinstance(parsed, dict):
                for e in SCHEMA.errors("http/error_body.json", parsed):
                    self.ctx.check(False, "5 error shape", "%s: error body: %s" % (what, e))
                self.ctx.check(parsed.get("code") in SPEC_CODES, "5 codes",
                               "%s: code %r is not in section 5's table" % (what, parsed.get("code")))
        elif schema and isinstance(parsed, dict):
            for e in SCHEMA.errors(schema, parsed):
                self.ctx.check(False, "schema " + schema, "%s: %s" % (what, e))
            for p in nulls(parsed):
                self.ctx.check(False, "2 optional members", "%s: %s is null (optional members are omitted)" % (what, p))
            for p, rev in revisions(parsed):
                self.ctx.check(isinstance(rev, int) and rev >= 1, "1 revision >= 1", "%s: %s.revision is %r" % (what, p, rev))
        elif schema:
            self.ctx.check(False, "schema " + schema, "%s: %d body is not a JSON object: %r" % (what, status, parsed))
        return status, hdrs, parsed

    async def backends(self):
        status, _, body = await self.http("GET", "/v1/backends", schema="http/backend_list.json", expect=200)
        return {b["name"]: b for b in body.get("backends", [])} if isinstance(body, dict) else {}

    async def job_info(self, job):
        _, _, body = await self.http("GET", "/v1/jobs/%d" % job, schema="http/job_info.json", expect=200)
        return body if isinstance(body, dict) else {}

    async def wait_http(self, path, pred, what, schema=None):
        """Polls `path` until `pred(status, body)`; bounded."""
        deadline = time.monotonic() + WAIT
        last = None
        while time.monotonic() < deadline:
            status, _, body = await self.http("GET", path, schema=schema if not last else None)
            last = (status, body)
            if pred(status, body):
                return status, body
            await asyncio.sleep(0.05)
        raise ScenarioStop("%s: never seen on GET %s; last %s" % (what, path, str(last)[:500]))


# ---------------------------------------------------------------------------------------------
# WebSocket peers


class Closed:
    def __init__(self, code, reason):
        self.code, self.reason = code, reason

    def __repr__(self):
        return "close %s %r" % (self.code, self.reason)


class Peer:
    """A raw peer over python3-websockets. Every message received is validated at once against the
    channel schema and the generic rules; `expect` takes messages out of the inbox in order."""

    def __init__(self, ctx, daemon, subprotocol, name, incarnation=None):
        self.ctx, self.daemon, self.subprotocol, self.name = ctx, daemon, subprotocol, name
        self.schema = "backend-out.json" if subprotocol == BACKEND else "client-out.json"
        self.incarnation = incarnation or (1763712000000 + abs(hash(name)) % 1000000)
        self.revision = 0
        self.inbox = []
        self.received = []
        self.closed = None
        self.sent_ids = []
        self.sent_types = []
        self.echoable_ids = set()
        self.raw_text = {}  # id(message) -> the text frame it came in
        self.answers = {}
        self.ws = None
        self.changed = asyncio.Event()
        self.events = JobTracker(ctx, name) if subprotocol == CLIENT else None
        self.backend_id = None
        self.backend_codes = set()  # codes this peer sent in `failed`: kept by the coordinator
        ctx.peers.append(self)

    def label(self):
        return "%s link %r" % ("backend" if self.subprotocol == BACKEND else "client", self.name)

    async def connect(self, subprotocols):
        self.ws = await websockets.connect(
            self.daemon.url, subprotocols=subprotocols, max_size=None, open_timeout=WAIT,
            close_timeout=5, ping_interval=None)
        self.task = asyncio.ensure_future(self._read())

    async def _read(self):
        try:
            while True:
                raw = await self.ws.recv()
                self._arrived(raw)
        except websockets.ConnectionClosed as e:
            self.closed = Closed(e.rcvd.code if e.rcvd else 1006, e.rcvd.reason if e.rcvd else "")
            self._check_close(self.closed.code)
        except Exception as e:  # noqa: BLE001 - reported as a failure of the scenario
            self.closed = Closed(None, repr(e))
        self.changed.set()

    def _check_close(self, code):
        """Section 5: before a 4xxx close the coordinator sends the matching `error`; before 4005 a
        `goodbye` `replaced` and no error (decision 2)."""
        want = CLOSE_ERRORS.get(code)
        if want is None:
            return
        last = self.received[-1] if self.received else {}
        if code == 4005:
            ok = last.get("type") == "goodbye" and last.get("reason") == "replaced"
        else:
            ok = last.get("type") == "error" and last.get("code") == want
        self.ctx.check(ok, "5 close codes", "%s: closed with %d after %s; spec: %s first"
                       % (self.label(), code, short([last]) if last else "nothing", want))

    def _arrived(self, raw):
        ctx, where = self.ctx, self.label()
        if isinstance(raw, bytes):
            ctx.check(False, "2 framing", "%s: the coordinator sent a binary frame" % where)
            return
        try:
            m = json.loads(raw)
        except ValueError:
            ctx.check(False, "2 framing", "%s: not JSON: %r" % (where, raw[:200]))
            return
        if not isinstance(m, dict):
            ctx.check(False, "2 framing", "%s: not a JSON object: %r" % (where, raw[:200]))
            return
        for e in SCHEMA.errors(self.schema, m):
            ctx.check(False, "schema " + self.schema, "%s: %s in %s" % (where, e, raw[:400]))
        for p in nulls(m):
            ctx.check(False, "2 optional members", "%s: %s is null in %s" % (where, p, raw[:300]))
        for p in fractional_numbers(raw):
            ctx.check(False, "2 integers", "%s: %s written with a fraction or exponent in %s" % (where, p, raw[:300]))
        for p, rev in revisions(m):
            ctx.check(isinstance(rev, int) and rev >= 1, "1 revision >= 1", "%s: %s.revision is %r in %s" % (where, p, rev, raw[:300]))
        t = m.get("type")
        if "id" in m and not (self.subprotocol == BACKEND and t == "load_model"):
            rid = m["id"]
            ctx.check(rid in self.sent_ids or rid in self.echoable_ids, "2 id echo", "%s: %s carries id %r, which no request of ours had" % (where, t, rid))
            self.answers[rid] = self.answers.get(rid, 0) + 1
            ctx.check(self.answers[rid] == 1, "7 one answer per request", "%s: a second answer to id %r: %s" % (where, rid, raw[:300]))
        if t == "error":
            code = m.get("code")
            ctx.check(code in SPEC_CODES, "5 codes", "%s: error code %r is not in section 5's table: %s" % (where, code, raw[:300]))
        if t == "assign":
            leases = self.daemon.leases.setdefault(m.get("job"), [])
            ctx.check(not leases or m.get("lease", -1) > leases[-1], "1 leases",
                      "%s: job %s assigned under lease %s after lease %s" % (where, m.get("job"), m.get("lease"), leases[-1] if leases else None))
            leases.append(m.get("lease"))
        if t == "job" and self.events is not None:
            self.events.event(m)
        if t == "job" and isinstance(m.get("error"), dict):
            code = m["error"].get("code")
            ctx.check(code in SPEC_CODES or code in BACKEND_CODES, "7 error codes",
                      "%s: job %s %s carries error %r, neither in section 5's table nor a backend's own code"
                      % (where, m.get("job"), m.get("event"), code))
        if t == "accepted" and self.events is not None:
            self.events.accepted(m)
        self.raw_text[id(m)] = raw
        self.received.append(m)
        self.inbox.append(m)
        self.changed.set()

    # --- sending

    async def send(self, message, valid=True):
        """Sends a message (a dict, or text as is). A dict is checked against the schema of what
        the coordinator receives unless `valid=False` marks it as deliberately wrong, so the suite
        does not test the daemon with malformed input by accident."""
        if isinstance(message, dict):
            if valid:
                for e in SCHEMA.errors(self.schema.replace("-out", "-in"), message):
                    self.ctx.check(False, "harness", "%s: the suite sent an invalid %s: %s" % (self.label(), message.get("type"), e))
            if "id" in message and message.get("type") != "load_model_result":
                self.sent_ids.append(message["id"])
            self.sent_types.append(message.get("type"))
            text = json.dumps(message)
        else:
            text = message
            rid = re.search(r'"id"\s*:\s*"([^"]*)"', text)
            if rid:  # may be echoed; raw text need not be readable enough to be answered with it
                self.echoable_ids.add(rid.group(1))
        await self.ws.send(text)

    async def send_raw(self, data):
        await self.ws.send(data)

    # --- receiving

    async def expect(self, pred, what, timeout=None, after=None):
        """The first message in the inbox matching `pred` (a type name or a function), waiting for
        it within the bound; with `after`, only one that arrived after that message."""
        if isinstance(pred, str):
            t = pred
            pred = lambda m: m.get("type") == t  # noqa: E731
        if after is not None:
            inner = pred

            def pred(m):
                return inner(m) and self._index(m) > self._index(after)
        deadline = time.monotonic() + (timeout or WAIT)
        while True:
            for i, m in enumerate(self.inbox):
                if pred(m):
                    del self.inbox[i]
                    return m
            if self.closed:
                raise ScenarioStop("%s: %s never came, the link closed (%r); unread: %s"
                                   % (self.label(), what, self.closed, short(self.inbox)))
            left = deadline - time.monotonic()
            if left <= 0:
                raise ScenarioStop("%s: %s never came within %gs; unread: %s"
                                   % (self.label(), what, timeout or WAIT, short(self.inbox)))
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def _index(self, message):
        return next(i for i, x in enumerate(self.received) if x is message)

    def take(self, pred):
        """Every message already in the inbox matching `pred`, removed."""
        out = [m for m in self.inbox if pred(m)]
        self.inbox = [m for m in self.inbox if not pred(m)]
        return out

    async def request(self, message, answer, rid=None, rule="7 answers", valid=True):
        """Sends a request with an id and waits for its one answer (`answer` type or `error`)."""
        rid = rid or "r%d" % (len(self.sent_ids) + 1)
        message = dict(message, id=rid)
        await self.send(message, valid=valid and answer != "error")
        m = await self.expect(lambda m: m.get("id") == rid and m.get("type") in (answer, "error"),
                              "the answer to %s %r" % (message["type"], rid))
        if answer != "error":
            self.ctx.check(m["type"] == answer, rule, "%s: %s %r answered %s" % (self.label(), message["type"], rid, short([m])))
        return m

    async def expect_close(self, what):
        """Waits for the link to close; returns the close code (None when it never closed)."""
        deadline = time.monotonic() + WAIT
        while not self.closed and time.monotonic() < deadline:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass
        if not self.closed:
            raise ScenarioStop("%s: still open, expected %s" % (self.label(), what))
        return self.closed.code

    async def barrier(self):
        """Everything the coordinator sent in answer to what we sent before: it answers in order,
        so once an `unknown_type` error for a marker message arrives, the earlier answers are in."""
        rid = "marker-%d" % len(self.sent_ids)
        await self.send({"type": "conformance_marker", "id": rid}, valid=False)
        m = await self.expect(lambda m: m.get("id") == rid, "the answer to the marker %r" % rid)
        self.ctx.check(m.get("type") == "error" and m.get("code") == "unknown_type", "2 unknown type",
                       "%s: an unknown type got %s" % (self.label(), short([m])))
        return self.received[:self._index(m)]

    async def final_checks(self):
        """On a link still up and welcomed, after everything sent has been answered: each request
        got exactly one answer, and each announcement exactly one ack."""
        if self.closed or not getattr(self, "welcome", None):
            return
        await self.barrier()
        missing = [i for i in self.sent_ids if i not in self.answers]
        self.ctx.check(not missing, "7 one answer per request", "%s: no answer to the requests %s" % (self.label(), missing))
        if self.subprotocol == BACKEND:
            announced = self.sent_types.count("capabilities")
            acks = sum(1 for m in self.received if m.get("type") == "capabilities_ack")
            self.ctx.check(announced == acks, "6.3 one ack per announcement",
                           "%s: %d announcements, %d acks" % (self.label(), announced, acks))

    async def close(self, code=1000):
        await self.ws.close(code)
        await asyncio.wait_for(self.task, WAIT)

    async def abort(self):
        if self.ws and not self.closed:
            try:
                self.ws.transport.abort()
            except Exception:  # noqa: BLE001
                pass
        if getattr(self, "task", None):
            try:
                await asyncio.wait_for(self.task, 5)
            except (asyncio.TimeoutError, Exception):
                pass

    async def drop(self):
        """Loses the link without a close frame, as a crashed host would."""
        self.ws.transport.abort()
        await asyncio.wait_for(self.task, WAIT)

    # --- handshake and announcements

    def hello_message(self, **over):
        if self.subprotocol == BACKEND:
            m = {"type": "hello", "id": "h1", "role": "backend", "name": self.name, "token": "", "versions": [1],
                 "incarnation": self.incarnation, "slots": 1, "software": "conformance/1"}
        else:
            m = {"type": "hello", "id": "h1", "role": "client", "name": self.name, "token": "", "versions": [1]}
        m.update(over)
        return {k: v for k, v in m.items() if v is not None}

    async def hello(self, **over):
        m = self.hello_message(**over)
        await self.send(m)
        w = await self.expect(lambda x: x.get("type") in ("welcome", "error"), "welcome")
        self.ctx.require(w["type"] == "welcome", "6.2 handshake", "%s: hello answered %s" % (self.label(), short([w])))
        self.ctx.check(w.get("id") == m.get("id"), "2 id echo", "%s: welcome id %r, hello id %r" % (self.label(), w.get("id"), m.get("id")))
        self.ctx.check(w.get("version") == 1, "3 versioning", "%s: welcome.version %r" % (self.label(), w.get("version")))
        if self.subprotocol == BACKEND:
            self.backend_id = w.get("backend")
            self.ctx.check(isinstance(self.backend_id, int) and self.backend_id > 0, "1 ids",
                           "%s: remote backend id %r is not positive" % (self.label(), self.backend_id))
        self.welcome = w
        return w

    def snapshot(self, state, features=(), models=(), loaded=(), slots=1, revision=None, incarnation=None, extra=None):
        return dict({"type": "capabilities", "incarnation": incarnation or self.incarnation,
                     "revision": revision if revision is not None else self.revision, "state": state,
                     "features": sorted(features), "models": {"available": sorted(models), "loaded": sorted(loaded)},
                     "slots": slots}, **(extra or {}))

    async def announce(self, state, features=(), models=(), loaded=(), slots=1, extra=None):
        """Sends the next revision and checks its ack: applied, carrying that version. `extra`:
        optional members (`speed`, `job_seconds`, ...)."""
        self.revision += 1
        await self.send(self.snapshot(state, features, models, loaded, slots, extra=extra))
        ack = await self.expect("capabilities_ack", "capabilities_ack of revision %d" % self.revision)
        self.ctx.check((ack.get("incarnation"), ack.get("revision"), ack.get("applied"))
                       == (self.incarnation, self.revision, True), "6.3 rule 1",
                       "%s: a newer snapshot (%d, %d) was acked %s" % (self.label(), self.incarnation, self.revision, short([ack])))
        return ack

    async def assigned(self, what="assign"):
        a = await self.expect("assign", what)
        return a

    async def report(self, kind, job, lease, **extra):
        m = {"type": kind, "job": job, "lease": lease}
        if kind == "completed":
            m.setdefault("result", {"ok": True})
        m.update(extra)
        if kind == "failed" and "code" in m:
            self.backend_codes.add(m["code"])
            BACKEND_CODES.add(m["code"])
        await self.send(m)


CLOSE_ERRORS = {4001: "bad_credentials", 4002: "no_common_version", 4003: "wrong_role", 4004: "hello_timeout",
                4005: "goodbye replaced", 4007: "forbidden", 4008: "rate_limited", 4009: "too_many_links"}
BACKEND_CODES = set()  # codes raw backends sent in `failed`; the coordinator may keep them


def short(messages, n=6):
    text = ", ".join(json.dumps(m, separators=(",", ":"))[:240] for m in messages[:n])
    return "[%s%s]" % (text, ", ..." if len(messages) > n else "")


# ---------------------------------------------------------------------------------------------
# Job events


FINAL = {"completed", "failed", "canceled"}
STATE_AFTER = {"queued": "queued", "gated": "gated", "released": "queued", "bound": "bound", "revoked": "queued",
               "started": "running", "progress": "running", "requeued": "queued", "completed": "completed",
               "failed": "failed", "canceled": "canceled"}


class JobTracker:
    """Checks the rules of 7.2 and decisions 6-7 on every job event a client link receives."""

    def __init__(self, ctx, name):
        self.ctx, self.name = ctx, name
        self.jobs = {}  # job -> list of events
        self.accepted_batches = set()
        self.early = {}  # batch -> events that arrived while no `accepted` named it

    def accepted(self, m):
        batch = m.get("batch")
        self.accepted_batches.add(batch)
        self.ctx.check(batch not in self.early, "decision 7 accepted first",
                       "client %r: %d event(s) of batch %s (%s) arrived before its `accepted`"
                       % (self.name, len(self.early.get(batch, [])), batch, ", ".join(self.early.get(batch, []))))

    def event(self, m):
        c = self.ctx
        job, ev, state, attempt = m.get("job"), m.get("event"), m.get("state"), m.get("attempt")
        where = "client %r job %s %s" % (self.name, job, ev)
        history = self.jobs.setdefault(job, [])
        if ev == "snapshot":
            history.append(m)
            return
        if m.get("batch") not in self.accepted_batches:
            self.early.setdefault(m.get("batch"), []).append("job %s %s" % (job, ev))
        if not history:
            c.check(ev == "queued", "7 first event queued", "%s: the first event of a new job is %r, not queued" % (where, ev))
        if ev in STATE_AFTER:
            c.check(state == STATE_AFTER[ev], "7.2 states", "%s: state %r after %r, spec says %r" % (where, state, ev, STATE_AFTER[ev]))
        if history and history[-1].get("event") == "canceling":
            c.check(ev == "canceled", "7.2 canceling", "%s: after canceling only canceled may follow" % where)
        finals = [e for e in history if e.get("event") in FINAL or e.get("state") in FINAL]
        c.check(not finals, "7.2 exactly once", "%s: an event after the final %r" % (where, finals[0].get("event") if finals else None))
        # The attempt of the last binding this link saw: a `bound` event, or a `snapshot` (7.2)
        # for a job bound before the link subscribed (after a coordinator restart, say).
        bound = [e for e in history if e.get("event") in ("bound", "snapshot")]
        current = bound[-1]["attempt"] if bound else 0
        if ev in ("queued", "gated"):
            c.check(attempt == current, "decision 6 attempt",
                    "%s: attempt %r, spec says %r (0 before any binding, else the last bound's)" % (where, attempt, current))
        elif ev == "bound":
            c.check(attempt == current + 1, "decision 6 attempt",
                    "%s: attempt %r, spec says %r (the previous attempt + 1)" % (where, attempt, current + 1))
            c.check("backend" in m, "7.2 members", "%s: no backend" % where)
        elif ev in ("requeued", "revoked"):
            c.check(attempt == current and current >= 1, "decision 6 attempt",
                    "%s: attempt %r, spec says %r (the attempt that just ended)" % (where, attempt, current))
            c.check("backend" in m, "7.2 members", "%s: no backend" % where)
            if ev == "requeued":
                c.check(isinstance(m.get("error"), dict), "decision 7 requeued", "%s: no error" % where)
        elif ev in ("started", "progress", "completed"):
            c.check(attempt == current, "decision 6 attempt", "%s: attempt %r, the binding's is %r" % (where, attempt, current))
            c.check("backend" in m, "7.2 members", "%s: no backend" % where)
        elif ev == "canceling":
            c.check(state in ("bound", "running"), "7.2 states", "%s: state %r, spec says bound or running (unchanged)" % (where, state))
            c.check(attempt == current and current >= 1, "decision 6 attempt", "%s: attempt %r, the binding's is %r" % (where, attempt, current))
            c.check("backend" in m, "7.2 members", "%s: no backend" % where)
        elif ev == "failed":
            c.check(attempt == current, "decision 6 attempt", "%s: attempt %r, the last binding's is %r" % (where, attempt, current))
            c.check(isinstance(m.get("error"), dict), "7.2 members", "%s: no error" % where)
        elif ev == "released":
            c.check("cause" in m, "7.2 members", "%s: no cause" % where)
            if m.get("cause") in ("announced", "idle_backend"):
                c.check("backend" in m, "decision 7 released", "%s: cause %s without backend" % (where, m.get("cause")))
            prev = history[-1].get("event") if history else None
            c.check(prev == "gated" or (prev == "snapshot" and history[-1].get("state") == "gated"), "7 event order",
                    "%s: released, but the previous event was %r" % (where, prev))
        history.append(m)

    def of(self, job, event=None):
        return [e for e in self.jobs.get(job, []) if event is None or e.get("event") == event]

    def names(self, job):
        return [e.get("event") for e in self.jobs.get(job, [])]


# ---------------------------------------------------------------------------------------------
# Raw WebSocket over a socket: for what python3-websockets will not do (refused upgrades, not
# answering pings).


class RawWS:
    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def upgrade(self, protocols):
        """Sends the upgrade request offering `protocols` (a header value, or None for no header);
        returns (status, headers, body)."""
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /v1/ws HTTP/1.1", "Host: 127.0.0.1:%d" % self.port, "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Key: " + key, "Sec-WebSocket-Version: 13"]
        if protocols is not None:
            lines.append("Sec-WebSocket-Protocol: " + protocols)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = b""
        if status != 101:
            n = int(headers.get("content-length", "0") or 0)
            body = rest
            while len(body) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            self.buf = b""
        else:
            self.buf = rest
        return status, headers, body

    def send_text(self, text):
        self.send_frame(0x1, text.encode())

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def read_frame(self):
        """(opcode, payload); EOFError when the peer hung up."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return b0 & 0x0F, payload

    def close_code(self):
        """Reads frames until a close frame (its code) or the end of the stream (None)."""
        try:
            while True:
                op, payload = self.read_frame()
                if op == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (EOFError, OSError):
            return None

    def close(self):
        if self.sock:
            self.sock.close()
