#!/usr/bin/python3
"""Muster's wire-only conformance suite (issue 13).

Written from Protocol/README.md, Protocol/schemas/ and README.md alone: each scenario starts a real
`muster serve` with the configuration it needs, plays raw backends and clients over WebSockets and
HTTP, validates every message and body the daemon sends against the schemas and the spec's rules
(harness.py), and checks the scenario's own sequence (a diagram of section 9, or a rule).

Usage:
  conformance.py --muster PATH [--jobs N] [--json] [SCENARIO ...]
  conformance.py --list
Without scenarios it runs them all, N at a time (default 2). Prints one line per scenario (or, with
--json, one JSON object {"scenarios": {name: {"rule": ..., "ok": ..., "failures": [...]}}}) and
exits 1 when any failed.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness  # noqa: E402
from harness import (BACKEND, CLIENT, WAIT, Ctx, RawWS, ScenarioStop, SCHEMA, SPEC_CODES, short, terminate_started)

SCENARIOS = []


def scenario(rule):
    def wrap(fn):
        SCENARIOS.append((fn.__name__, rule, fn))
        return fn
    return wrap


VIDEO = ["frameinterps", "video"]


async def submit(client, jobs, **extra):
    m = await client.request(dict({"type": "submit", "jobs": jobs}, **extra), "accepted")
    client.ctx.require(m["type"] == "accepted", "7.1 submit", "submit refused: %s" % short([m]))
    return m


def event(client, job, name, **match):
    def pred(m):
        return (m.get("type") == "job" and m.get("job") == job and m.get("event") == name
                and all(m.get(k) == v for k, v in match.items()))
    return client.expect(pred, "job %s %s%s" % (job, name, " " + json.dumps(match) if match else ""))


ANY = "*"  # an error code the spec leaves open (e.g. on a revoked or canceled attempt)


def check_history(t, info, expected, rule="decision 9 history"):
    """`expected`: [(attempt, backend, outcome, error code, None for no error, or ANY)] in order."""
    hist = info.get("history", [])
    got = [(h.get("attempt"), h.get("backend"), h.get("outcome"), (h.get("error") or {}).get("code")) for h in hist]
    same = len(got) == len(expected) and all(
        g[:3] == e[:3] and (e[3] == ANY or g[3] == e[3]) for g, e in zip(got, expected))
    t.check(same, rule, "job %s history %s, spec says %s" % (info.get("job"), got, expected))
    for h in hist:
        t.check(h.get("outcome") in HISTORY_OUTCOMES, rule,
                "job %s attempt %s outcome %r is not one of %s" % (info.get("job"), h.get("attempt"), h.get("outcome"), sorted(HISTORY_OUTCOMES)))


HISTORY_OUTCOMES = {"completed", "failed", "canceled", "requeued", "revoked", "running", "bound"}


# ---------------------------------------------------------------------------------------------
# 9.1 Registration, 6.3 announcements and anti-entropy


@scenario("9.1 registration")
async def registration(t):
    d = await t.daemon({"links.sync_interval_seconds": "1"})
    b = await d.backend("gpu-box-2")
    w = await b.hello()
    t.check(w.get("bindings") == [], "6.2 welcome", "a new backend's bindings: %r" % w.get("bindings"))
    t.check("known" not in w, "6.2 welcome", "a new backend's welcome carries known %r" % w.get("known"))
    t.check(w.get("max_message_bytes") == 1048576, "2 framing", "max_message_bytes %r, default 1 MiB" % w.get("max_message_bytes"))
    t.check(w.get("sync_ms") == 1000, "6.2 welcome", "sync_ms %r with links.sync_interval_seconds=1" % w.get("sync_ms"))
    # Registered, not announced: listed without capabilities.
    listed = (await d.backends()).get("gpu-box-2")
    t.require(listed is not None, "8 backends", "GET /v1/backends does not list gpu-box-2")
    t.check(listed.get("id") == b.backend_id and listed.get("local") is False and listed.get("link") == "up", "8 backends",
            "gpu-box-2 listed as %s" % listed)
    t.check("capabilities" not in listed, "8 backends", "capabilities before the first announcement: %s" % listed.get("capabilities"))
    await b.announce("loading")
    ack2 = await b.announce("ready", VIDEO)
    listed = (await d.backends()).get("gpu-box-2", {})
    caps = listed.get("capabilities", {})
    t.check((caps.get("incarnation"), caps.get("revision"), caps.get("state"), caps.get("features"))
            == (b.incarnation, 2, "ready", VIDEO), "8 backends", "held snapshot %s" % caps)
    t.check("first_announced_ms" in listed, "8 backends", "no first_announced_ms after announcing: %s" % listed)
    # loop every sync_ms: sync {known {I, 2}}; equal version: no answer.
    s = await b.expect("sync", "a periodic sync", after=ack2)
    t.check(s.get("known") == {"incarnation": b.incarnation, "revision": 2}, "9.1 sync", "sync %s, held version is (I, 2)" % s)
    # A second backend gets another positive id.
    b3 = await d.backend("gpu-box-3")
    await b3.hello()
    t.check(b3.backend_id not in (None, b.backend_id), "1 ids", "two names, ids %s and %s" % (b.backend_id, b3.backend_id))


@scenario("6.3 announcements, sync and anti-entropy")
async def sync_and_anti_entropy(t):
    d = await t.daemon()  # periodic syncs far apart: a sync now is the gap's
    b = await d.ready_backend("syncer", VIDEO)  # (I, 1)
    # A gap (revision 3 while holding 1): applied, and a sync at once naming what is held.
    b.revision = 3
    await b.send(b.snapshot("ready", VIDEO + ["image"]))
    ack = await b.expect("capabilities_ack", "ack of revision 3")
    t.check((ack["revision"], ack["applied"]) == (3, True), "6.3 rule 1", "gap snapshot acked %s" % ack)
    s = await b.expect("sync", "the sync a revision gap triggers", after=ack)
    t.check(s.get("known") == {"incarnation": b.incarnation, "revision": 3}, "6.3 anti-entropy", "gap sync %s" % s)
    # A duplicate and a stale one: exactly one ack each, applied false, with the held version.
    b.take(lambda m: m.get("type") in ("sync", "capabilities_ack"))
    await b.send(b.snapshot("ready", VIDEO + ["image"], revision=3))
    await b.send(b.snapshot("ready", ["image"], revision=2))
    await b.barrier()
    acks = b.take(lambda m: m.get("type") == "capabilities_ack")
    t.check(len(acks) == 2, "decision 8 one ack", "a duplicate and a stale announcement got %d acks: %s" % (len(acks), short(acks)))
    for a in acks:
        t.check((a.get("incarnation"), a.get("revision"), a.get("applied")) == (b.incarnation, 3, False), "6.3 rule 2",
                "not applied, ack %s; spec: applied false with the held version (I, 3)" % a)
    caps = (await d.backends())["syncer"].get("capabilities", {})
    t.check(caps.get("revision") == 3 and caps.get("features") == ["frameinterps", "image", "video"], "6.3 rule 2",
            "the stale snapshot changed what is held: %s" % caps)
    # Periodic syncs; without a held snapshot, sync has no known.
    d2 = await t.daemon({"links.sync_interval_seconds": "1"})
    c = await d2.backend("mute")
    await c.hello()
    s = await c.expect("sync", "a periodic sync to a backend that never announced")
    t.check("known" not in s, "6.3 anti-entropy", "sync without a held snapshot: %s" % s)


# ---------------------------------------------------------------------------------------------
# 9.2 The warm-up gate


@scenario("9.2 gate: idle_backend and announced releases")
async def gate_announced(t):
    local = {"name": "local-video", "kind": "simulated", "features": VIDEO, "slots": 1,
             "job_seconds": {"default": 600}}
    d = await t.daemon({"gate.window_seconds": "120"}, backends=[local])
    await d.wait_http("/v1/backends", lambda s, b: any(x.get("id") == -1 and x.get("capabilities", {}).get("state") == "ready"
                                                     for x in b.get("backends", [])), "local -1 ready")
    b = await d.backend("gpu-box-2")
    await b.hello()
    cl = await d.subscribed_client()
    acc = await submit(cl, [{"kind": "video", "needs": VIDEO, "count": 4}])
    jobs = acc["jobs"]
    t.check(len(jobs) == 4, "7.1 accepted", "4 jobs, accepted lists %s" % jobs)
    # Jobs 2-4 stay gated: /readyz 503, 3 held, waiting for backend 2.
    status, body = await d.wait_http("/readyz", lambda s, b: s == 503 and b.get("held_jobs") == 3, "readyz holding 3 jobs",
                                     schema="http/readiness.json")
    t.check(body.get("ready") is False and "jobs_held" in body.get("reasons", []), "8 readyz", "readyz %s" % body)
    waits = body.get("waiting", [])
    t.check(len(waits) == 1 and waits[0].get("jobs") == 3 and waits[0].get("features") == VIDEO
            and any(x.get("id") == b.backend_id and x.get("reason") == "not_announced" for x in waits[0].get("backends", [])),
            "8 readyz", "waiting %s" % waits)
    await cl.request({"type": "status"}, "status_report")  # every event sent so far is in
    started = [j for j in jobs if "bound" in cl.events.names(j)]
    t.check(len(started) == 1, "9.2 idle_backend", "jobs bound before the announcement: %s" % {j: cl.events.names(j) for j in jobs})
    for j in jobs:
        names = [n for n in cl.events.names(j) if n not in ("started", "progress")]  # -1 runs job 1
        want = ["queued", "gated", "released", "bound"] if j in started else ["queued", "gated"]
        t.check(names == want, "decision 7 event order", "job %s before the announcement: %s, spec %s" % (j, names, want))
        g = cl.events.of(j, "gated")
        if g:
            w = g[0].get("waiting", {})
            t.check(w.get("features") == VIDEO, "7.2 gated", "job %s waiting.features %s" % (j, w.get("features")))
            t.check({"id": b.backend_id, "name": "gpu-box-2", "reason": "not_announced"} in w.get("backends", []), "7.2 gated",
                    "job %s waits for %s, spec: backend 2 not_announced" % (j, w.get("backends")))
            t.check("until_ms" in w, "7.2 gated", "job %s: no until_ms" % j)
    for j in started:
        r = cl.events.of(j, "released")
        t.check(r and (r[0].get("cause"), r[0].get("backend")) == ("idle_backend", -1), "9.2 idle_backend",
                "job %s released %s; spec: cause idle_backend, backend -1" % (j, r))
        bd = cl.events.of(j, "bound")
        t.check(bd and bd[0].get("backend") == -1, "9.2", "job %s bound %s, spec -1" % (j, bd))
    rest = [j for j in jobs if j not in started]
    await b.announce("ready", VIDEO)
    a1 = await b.assigned("first assign to backend 2")
    a2 = await b.assigned("second assign to backend 2 (overqueue slot)")
    t.check(a1["attempt"] == a2["attempt"] == 1 and a1["lease"] != a2["lease"], "6.4 assign", "assigns %s" % short([a1, a2]))
    t.check(a1["needs"] == VIDEO and a1["kind"] == "video", "6.4 assign", "assign %s" % a1)
    await d.wait_http("/readyz", lambda s, b: s == 200, "readyz 200 after the gate opened", schema="http/readiness.json")
    await d.wait_http("/v1/backends", lambda s, body: sum(x.get("load", {}).get("in_flight", 0) for x in body.get("backends", [])) == 4,
                      "all 4 jobs bound")
    await cl.request({"type": "status"}, "status_report")
    wheres = {}
    for j in rest:
        names = cl.events.names(j)
        t.check(names == ["queued", "gated", "released", "bound"], "decision 7 event order", "job %s: %s" % (j, names))
        r = cl.events.of(j, "released")
        t.check(r and (r[0].get("cause"), r[0].get("backend")) == ("announced", b.backend_id), "9.2 announced",
                "job %s released %s; spec: cause announced, backend %s" % (j, r and {k: r[0].get(k) for k in ("cause", "backend")}, b.backend_id))
        bd = cl.events.of(j, "bound")
        wheres[j] = bd[0].get("backend") if bd else None
    t.check(sorted(wheres.values(), key=str) == sorted([-1, b.backend_id, b.backend_id], key=str), "9.2 spread",
            "jobs 2-4 bound to %s; spec: two on backend 2, one on -1 behind job 1" % wheres)


@scenario("9.2 gate: window_elapsed, then no_eligible_backend")
async def gate_window_elapsed(t):
    # The window counts from the backend's registration: the job must arrive within it, so it is
    # long enough for a loaded machine and the client is ready before the backend registers.
    d = await t.daemon({"gate.window_seconds": "4"})
    cl = await d.subscribed_client()
    b = await d.backend("late")
    await b.hello()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    await event(cl, j, "queued")
    g = await event(cl, j, "gated")
    t.check(any(x.get("id") == b.backend_id and x.get("reason") == "not_announced" for x in g.get("waiting", {}).get("backends", [])),
            "7.2 gated", "waiting %s" % g.get("waiting"))
    r = await event(cl, j, "released")
    t.check(r.get("cause") == "window_elapsed", "9.2 window_elapsed", "released %s" % r)
    f = await event(cl, j, "failed")
    err = f.get("error", {})
    t.check(err.get("code") == "no_eligible_backend", "5 no_eligible_backend", "failed with %s" % err)
    details = err.get("details", {})
    errs = no_eligible_details_errors(details)
    t.check(not errs, "5 no_eligible_backend details", "details %s: %s" % (details, errs))
    t.check(details.get("missing_features") == ["video"], "5 no_eligible_backend details", "missing_features %s" % details.get("missing_features"))
    t.check(any(x.get("backend") == b.backend_id and "not_announced" in x.get("reasons", []) for x in details.get("refusals", [])),
            "5 no_eligible_backend details", "refusals %s" % details.get("refusals"))
    info = await d.job_info(j)
    t.check(info.get("state") == "failed" and info.get("attempt") == 0 and info.get("history") == [], "decision 6 attempt",
            "a job failed before any binding: state %s attempt %s history %s" % (info.get("state"), info.get("attempt"), info.get("history")))


def no_eligible_details_errors(details):
    """Schema errors of no_eligible_backend's details (defs.json#/$defs/noEligibleBackend)."""
    return SCHEMA.def_errors("noEligibleBackend", details)


# ---------------------------------------------------------------------------------------------
# 9.3 - 9.5 and 6.5: loss, stealing, reconnection


@scenario("9.3 backend lost, requeued after the grace")
async def backend_lost_requeue(t):
    d = await t.daemon({"links.suspect_grace_seconds": "1"})
    b = await d.ready_backend("gpu-box-2", ["video"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a = await b.assigned()
    t.check(a["job"] == j and a["attempt"] == 1, "6.4 assign", "assign %s" % a)
    await b.report("started", j, a["lease"])
    await event(cl, j, "started")
    dd = await d.ready_backend("gpu-box-3", ["video"])
    await b.drop()
    rq = await event(cl, j, "requeued")
    t.check(rq.get("backend") == b.backend_id and rq.get("error", {}).get("code") == "backend_lost" and rq.get("attempt") == 1,
            "9.3 requeued", "requeued %s; spec: backend %s, error backend_lost, attempt 1" % (rq, b.backend_id))
    a2 = await dd.assigned("assign of the requeued job")
    t.check(a2["job"] == j and a2["attempt"] == 2 and a2["lease"] > a["lease"], "9.3 new lease",
            "second assign %s after lease %s" % (a2, a["lease"]))
    await dd.report("started", j, a2["lease"])
    # The lost backend comes back with the same incarnation after the grace: no bindings.
    b2 = await d.backend("gpu-box-2", incarnation=b.incarnation)
    w = await b2.hello()
    t.check(w.get("backend") == b.backend_id, "1 ids", "same name, id %s then %s" % (b.backend_id, w.get("backend")))
    t.check(w.get("bindings") == [], "9.3 bindings", "late reconnect's bindings %s" % w.get("bindings"))
    await b2.report("completed", j, a["lease"])
    sl = await b2.expect("stale_lease", "stale_lease for the old lease")
    t.check((sl["job"], sl["lease"], sl["about"]) == (j, a["lease"], "completed"), "9.3 stale_lease", "stale_lease %s" % sl)
    await dd.report("completed", j, a2["lease"], result={"frames": 48})
    c = await event(cl, j, "completed")
    t.check(c.get("backend") == dd.backend_id and c.get("result") == {"frames": 48}, "9.3 completes once", "completed %s" % c)
    info = await d.job_info(j)
    check_history(t, info, [(1, b.backend_id, "requeued", "backend_lost"), (2, dd.backend_id, "completed", None)])
    t.check(info.get("state") == "completed" and info.get("attempt") == 2, "8 job_info", "state %s attempt %s" % (info.get("state"), info.get("attempt")))


@scenario("9.4 work stealing with revoke")
async def work_stealing(t):
    d = await t.daemon()
    s = await d.ready_backend("slow", ["video"])
    cl = await d.subscribed_client()
    j8, j9 = (await submit(cl, [{"kind": "video", "needs": ["video"], "count": 2}]))["jobs"]
    a8 = await s.assigned("job 8")
    a9 = await s.assigned("job 9 (overqueue)")
    t.check((a8["job"], a9["job"]) == (j8, j9), "6.4", "assign order %s" % short([a8, a9]))
    await s.report("started", j8, a8["lease"])
    await event(cl, j8, "started")
    f = await d.ready_backend("fast", ["video"])
    rv = await s.expect("revoke", "revoke of job 9")
    t.check((rv["job"], rv["lease"]) == (j9, a9["lease"]), "9.4 revoke", "revoke %s" % rv)
    a = await f.assigned("job 9 on the fast backend")
    t.check(a["job"] == j9 and a["lease"] > a9["lease"] and a["attempt"] == 2, "9.4 new lease",
            "assign %s; spec: job %s, lease > %s, attempt 2 (decision 6)" % (a, j9, a9["lease"]))
    r = await event(cl, j9, "revoked")
    t.check(r.get("backend") == s.backend_id and r.get("attempt") == 1, "9.4 revoked", "revoked %s" % r)
    await event(cl, j9, "bound", backend=s.backend_id)  # the first binding, before the steal
    bd = await event(cl, j9, "bound")
    t.check(bd.get("backend") == f.backend_id, "9.4", "bound after the revoke %s" % bd)
    await f.report("started", j9, a["lease"])
    await s.report("started", j9, a9["lease"])  # the race: too late
    sl = await s.expect("stale_lease", "stale_lease for the revoked lease")
    t.check((sl["job"], sl["lease"], sl["about"]) == (j9, a9["lease"], "started"), "9.4 stale_lease", "%s" % sl)
    await f.report("completed", j9, a["lease"])
    await event(cl, j9, "completed", backend=f.backend_id)
    check_history(t, await d.job_info(j9), [(1, s.backend_id, "revoked", ANY), (2, f.backend_id, "completed", None)])


@scenario("7.1 within a batch, the longest jobs first")
async def longest_first(t):
    d = await t.daemon({"routing.overqueue": 0})
    b = await d.backend("gpu")
    await b.hello(slots=1)
    await b.announce("ready", ["video"], slots=1, extra={
        "job_seconds": [{"kind": "image", "seconds": 5}, {"kind": "video", "seconds": 30}]})
    cl = await d.subscribed_client()
    jobs = (await submit(cl, [{"kind": "image", "count": 2}, {"kind": "video", "needs": ["video"]}]))["jobs"]
    t.check(jobs == sorted(jobs), "7.1", "accepted.jobs %s: spec says list order" % jobs)
    order = []
    for k in range(len(jobs)):
        a = await b.assigned("assign %d" % (k + 1))
        order.append(a["job"])
        await b.report("started", a["job"], a["lease"])
        await b.report("completed", a["job"], a["lease"])
        await event(cl, a["job"], "completed")
    t.check(order == [jobs[2], jobs[0], jobs[1]], "7.1 longest first",
            "assign order %s; spec: the video %s (30 s) first, then the images (5 s) in list order" % (order, jobs[2]))


@scenario("7.2 backends announcing together are compared for a held job")
async def announce_together(t):
    # The gate on (the harness turns it off), and a long pause, so that the two announcements
    # below always fall within it, however slow the machine; the default is 0.1 s.
    d = await t.daemon({"gate.window_seconds": "600", "gate.settle_seconds": "2"})
    slow, fast, late = [await d.backend(name) for name in ("slow", "fast", "late")]
    for b in (slow, fast, late):
        await b.hello()  # registered, not announced: the gate is closed ("late" never announces)
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    await event(cl, j, "gated")
    await slow.announce("ready", ["video"], extra={"speed": 1})
    await fast.announce("ready", ["video"], extra={"speed": 3})
    a = await fast.assigned("assign on the faster backend, which announced second")
    t.check(a["job"] == j, "7.2 order", "assign %s; spec: job %s" % (short([a]), j))
    early = [m for m in await slow.barrier() if m.get("type") == "assign"]
    t.check(not early, "7.2 order",
            "the slower backend, first to announce, got %s; spec: no job is bound during the pause "
            "after a first ready while jobs are held, so both backends are compared" % short(early))
    r = await event(cl, j, "released")
    t.check(r.get("cause") == "idle_backend" and r.get("backend") == fast.backend_id, "7.2 released",
            "released %s; spec: cause idle_backend, backend %s" % (r, fast.backend_id))
    await fast.report("started", j, a["lease"])
    await fast.report("completed", j, a["lease"])
    await event(cl, j, "completed", backend=fast.backend_id)


@scenario("9.5 reconnect in grace, same incarnation")
async def reconnect_same_incarnation(t):
    d = await t.daemon()  # grace 600 s: the reconnect is always within it
    b = await d.backend("gpu-box-2")
    await b.hello()
    await b.announce("loading")
    await b.announce("ready", ["video"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a = await b.assigned()
    await b.report("started", j, a["lease"])
    await event(cl, j, "started")
    await b.drop()
    await d.wait_http("/v1/backends", lambda s, body: any(x.get("name") == "gpu-box-2" and x.get("link") == "suspect"
                                                          for x in body.get("backends", [])), "gpu-box-2 suspect")
    info = await d.job_info(j)
    t.check(info.get("state") == "running" and info.get("backend") == b.backend_id, "6.5 suspect keeps jobs", "job %s" % info)
    check_history(t, info, [(1, b.backend_id, "running", None)])
    b2 = await d.backend("gpu-box-2", incarnation=b.incarnation)
    w = await b2.hello()
    t.check(w.get("backend") == b.backend_id, "9.5", "id %s, was %s" % (w.get("backend"), b.backend_id))
    t.check(w.get("known") == {"incarnation": b.incarnation, "revision": 2}, "9.5 known", "welcome.known %s" % w.get("known"))
    t.check(w.get("bindings") == [{"job": j, "lease": a["lease"]}], "9.5 bindings", "welcome.bindings %s" % w.get("bindings"))
    await b2.report("completed", j, a["lease"], result="done")
    c = await event(cl, j, "completed")
    t.check(c.get("backend") == b.backend_id and c.get("result") == "done" and c.get("attempt") == 1, "9.5", "completed %s" % c)
    listed = (await d.backends())["gpu-box-2"]
    t.check(listed.get("link") == "up" and listed.get("capabilities", {}).get("revision") == 2, "9.5",
            "after the reconnect: %s" % listed)
    # Without re-announcing it takes work again.
    (j2,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a2 = await b2.assigned("a new job after the reconnect")
    t.check(a2["job"] == j2 and a2["lease"] > a["lease"], "6.4 leases", "assign %s" % a2)
    check_history(t, await d.job_info(j), [(1, b.backend_id, "completed", None)])


@scenario("6.5 restart: new incarnation")
async def reconnect_new_incarnation(t):
    d = await t.daemon({"gate.window_seconds": "120"})
    b = await d.ready_backend("gpu-box-2", ["video"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a = await b.assigned()
    await b.report("started", j, a["lease"])
    await event(cl, j, "started")
    await b.drop()
    nb = await d.backend("gpu-box-2", incarnation=b.incarnation + 1000)
    w = await nb.hello()
    t.check(w.get("backend") == b.backend_id, "1 ids", "id %s, was %s" % (w.get("backend"), b.backend_id))
    t.check("known" not in w, "decision 3 known", "welcome after a restart carries known %s (the old snapshot)" % w.get("known"))
    t.check(w.get("bindings") == [], "6.5 restart", "bindings %s: the old leases are dead" % w.get("bindings"))
    rq = await event(cl, j, "requeued")
    t.check(rq.get("backend") == b.backend_id and rq.get("attempt") == 1, "6.5 restart", "requeued %s" % rq)
    code = rq.get("error", {}).get("code")
    t.check(code in SPEC_CODES, "decision 7 requeued codes", "requeued error %r is not in section 5's table" % code)
    listed = (await d.backends())["gpu-box-2"]
    t.check("capabilities" not in listed, "decision 3 backends", "the old snapshot still listed: %s" % listed.get("capabilities"))
    # The old lease is dead.
    await nb.report("completed", j, a["lease"])
    sl = await nb.expect("stale_lease", "stale_lease for the old incarnation's lease")
    t.check((sl["job"], sl["lease"], sl["about"]) == (j, a["lease"], "completed"), "6.5 restart", "%s" % sl)
    # Until the new incarnation announces, the gate holds video jobs for it as not announced.
    g = await event(cl, j, "gated")
    t.check({"id": b.backend_id, "name": "gpu-box-2", "reason": "not_announced"} in g.get("waiting", {}).get("backends", []),
            "decision 3 gate", "the requeued job waits for %s" % g.get("waiting"))
    nb.revision = 0
    await nb.announce("ready", ["video"])
    r = await event(cl, j, "released")
    t.check((r.get("cause"), r.get("backend")) == ("announced", b.backend_id), "decision 7 released", "released %s" % r)
    a2 = await nb.assigned("the requeued job on the new incarnation")
    t.check(a2["job"] == j and a2["attempt"] == 2 and a2["lease"] > a["lease"], "6.5 restart", "assign %s" % a2)
    await nb.report("completed", j, a2["lease"])
    await event(cl, j, "completed")


@scenario("6.5 coordinator restart: durable jobs, bindings kept")
async def coordinator_restart(t):
    # One job store for both lives of the coordinator (README "Durable jobs").
    store = harness.scratch("restart-")
    settings = {"store.url": "sqlite://%s/muster.sqlite" % store, "links.suspect_grace_seconds": "120"}
    d = await t.daemon(settings)
    b = await d.ready_backend("gpu-box-2", ["video"])
    cl = await d.subscribed_client()
    acc = await submit(cl, [{"kind": "video", "needs": ["video"]}], batch_key="restart-1")
    (j,) = acc["jobs"]
    a = await b.assigned()
    await b.report("started", j, a["lease"])
    await event(cl, j, "started")
    await d.kill()
    d2 = await t.daemon(settings)
    d2.leases = dict(d.leases)  # the assigns this scenario saw before the restart
    # 7.1: the accepted batch survived, and its key still answers with it.
    cl2 = await d2.client("cl")  # the same name: the same default owner, the same content
    await cl2.hello()
    again = await submit(cl2, [{"kind": "video", "needs": ["video"]}], batch_key="restart-1")
    t.check(again.get("duplicate") is True and again.get("batch") == acc["batch"] and again.get("jobs") == [j],
            "7.1 durability", "a retry of the accepted batch after the restart: %s" % again)
    await cl2.request({"type": "subscribe"}, "subscribed")
    # 6.5: the backend that kept running (same incarnation) gets its job back under the same lease.
    b2 = await d2.backend("gpu-box-2", incarnation=b.incarnation)
    w = await b2.hello()
    t.check(w.get("backend") == b.backend_id, "6.5 coordinator restart", "id %s, was %s" % (w.get("backend"), b.backend_id))
    t.check(w.get("bindings") == [{"job": j, "lease": a["lease"]}], "6.5 coordinator restart",
            "welcome.bindings %s after the restart" % w.get("bindings"))
    b2.revision = b.revision
    await b2.announce("ready", ["video"])
    await b2.report("started", j, a["lease"])
    await b2.report("completed", j, a["lease"], result="kept")
    c = await event(cl2, j, "completed")
    t.check(c.get("attempt") == 1 and c.get("result") == "kept" and c.get("backend") == b.backend_id,
            "6.5 coordinator restart", "completed %s: the job ran once" % c)
    # 6.4: leases issued after the restart are larger than every lease before it.
    (j2,) = (await submit(cl2, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a2 = await b2.assigned("a new job after the restart")
    t.check(a2["job"] == j2 and a2["lease"] > a["lease"], "6.4 leases", "assign %s after lease %s" % (a2, a["lease"]))
    await b2.report("completed", j2, a2["lease"])
    await event(cl2, j2, "completed")


# ---------------------------------------------------------------------------------------------
# Failures and attempts


@scenario("6.4 retryable failure keeps the backend's code")
async def failure_retryable(t):
    d = await t.daemon()
    b = await d.ready_backend("oom-box", ["image"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "image", "needs": ["image"]}]))["jobs"]
    a = await b.assigned()
    await b.report("started", j, a["lease"])
    await b.report("failed", j, a["lease"], code="out_of_memory", message="CUDA out of memory", retryable=True)
    rq = await event(cl, j, "requeued")
    t.check(rq.get("backend") == b.backend_id and rq.get("error", {}).get("code") == "out_of_memory" and rq.get("attempt") == 1,
            "decision 7 requeued", "requeued %s; spec: backend %s, error out_of_memory, attempt 1" % (rq, b.backend_id))
    a2 = await b.assigned("the retry")
    t.check(a2["attempt"] == 2 and a2["lease"] > a["lease"], "6.4 attempt", "retry %s" % a2)
    await b.report("completed", j, a2["lease"])
    await event(cl, j, "completed")
    check_history(t, await d.job_info(j), [(1, b.backend_id, "requeued", "out_of_memory"), (2, b.backend_id, "completed", None)])


@scenario("6.4 non-retryable failure fails the job")
async def failure_not_retryable(t):
    d = await t.daemon()
    b = await d.ready_backend("strict", ["image"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "image", "needs": ["image"]}]))["jobs"]
    a = await b.assigned()
    await b.report("failed", j, a["lease"], code="invalid_params", message="no prompt", retryable=False)
    f = await event(cl, j, "failed")
    t.check(f.get("error", {}).get("code") == "invalid_params" and f.get("backend") == b.backend_id and f.get("attempt") == 1,
            "5 job_failed", "failed %s; spec: the backend's code kept, backend, attempt 1" % f)
    await b.report("completed", j, a["lease"])
    sl = await b.expect("stale_lease", "stale_lease for a report on a final job")
    t.check((sl["job"], sl["about"]) == (j, "completed"), "6.4 lease check", "%s" % sl)
    info = await d.job_info(j)
    t.check(info.get("error", {}).get("code") == "invalid_params", "8 job_info", "job error %s" % info.get("error"))
    check_history(t, info, [(1, b.backend_id, "failed", "invalid_params")])


@scenario("5 attempts_exhausted")
async def attempts_exhausted(t):
    d = await t.daemon({"routing.max_attempts": "2"})
    b = await d.ready_backend("flaky", ["image"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "image", "needs": ["image"]}]))["jobs"]
    for n in (1, 2):
        a = await b.assigned("attempt %d" % n)
        t.check(a["attempt"] == n, "6.4 attempt", "assign %s" % a)
        await b.report("failed", j, a["lease"], code="out_of_memory", message="oom", retryable=True)
    f = await event(cl, j, "failed")
    err = f.get("error", {})
    t.check(err.get("code") == "attempts_exhausted" and f.get("attempt") == 2, "5 attempts_exhausted", "failed %s" % f)
    hist = err.get("details", {}).get("history")
    t.check(isinstance(hist, list) and len(hist) == 2, "5 attempts_exhausted", "details.history %s" % hist)
    check_history(t, await d.job_info(j), [(1, b.backend_id, "requeued", "out_of_memory"), (2, b.backend_id, "failed", "out_of_memory")])


# ---------------------------------------------------------------------------------------------
# Cancel and drain


@scenario("7.3 cancel: queued, bound, running")
async def cancel_states(t):
    # A short cancel grace: the running job's backend never confirms (a backend of the old spec).
    d = await t.daemon({"routing.no_eligible_backend": "queue", "jobs.cancel_grace_seconds": 1})
    b = await d.ready_backend("one-slot", ["video"])
    cl = await d.subscribed_client()
    jr, jb = (await submit(cl, [{"kind": "video", "needs": ["video"], "count": 2}]))["jobs"]
    ar = await b.assigned("running job")
    ab = await b.assigned("bound job (overqueue)")
    await b.report("started", jr, ar["lease"])
    await event(cl, jr, "started")
    (jq,) = (await submit(cl, [{"kind": "image", "needs": ["image"], "priority": 7}]))["jobs"]  # nobody has image: stays queued
    await event(cl, jq, "queued")
    r = await cl.request({"type": "status"}, "status_report")
    q = r.get("queue", {})
    t.check((q.get("queued"), q.get("gated"), q.get("bound"), q.get("running"), q.get("by_priority"))
            == (1, 0, 1, 1, [{"priority": 7, "jobs": 1}]), "7.3 status",
            "queue %s; spec: 1 queued (priority 7), 1 bound, 1 running" % q)
    # queued
    m = await cl.request({"type": "cancel", "job": jq}, "canceled")
    t.check(m.get("jobs") == [jq], "7.3 cancel", "canceled %s" % m)
    c = await event(cl, jq, "canceled")
    t.check("backend" not in c, "7.2 canceled", "a queued job's canceled event names backend %s" % c.get("backend"))
    # bound: the backend gets cancel, the job is canceling until the backend confirms
    m = await cl.request({"type": "cancel", "job": jb}, "canceled")
    t.check(m.get("jobs") == [jb], "7.3 cancel", "canceled %s" % m)
    bc = await b.expect("cancel", "cancel of the bound job")
    t.check((bc["job"], bc["lease"]) == (jb, ab["lease"]), "7.3 cancel", "%s" % bc)
    await event(cl, jb, "canceling", backend=b.backend_id, state="bound")
    await b.report("failed", jb, ab["lease"], code="canceled", message="dropped", retryable=False)
    await event(cl, jb, "canceled", backend=b.backend_id)
    await b.report("started", jb, ab["lease"])
    sl = await b.expect("stale_lease", "stale_lease after cancel")
    t.check((sl["job"], sl["about"]) == (jb, "started"), "6.4 lease check", "%s" % sl)
    # running, over HTTP: the backend never confirms; the cancel grace ends it
    status, _, body = await d.http("DELETE", "/v1/jobs/%d" % jr, schema="http/cancel_result.json", expect=200)
    t.check(body == {"job": jr, "state": "running", "canceled": True}, "8 DELETE", "cancel_result %s" % body)
    rc = await b.expect("cancel", "cancel of the running job")
    t.check((rc["job"], rc["lease"]) == (jr, ar["lease"]), "7.3 cancel", "%s" % rc)
    await event(cl, jr, "canceling", backend=b.backend_id, state="running")
    status, _, body = await d.http("DELETE", "/v1/jobs/%d" % jr, schema="http/cancel_result.json", expect=200)
    t.check(body == {"job": jr, "state": "running", "canceled": True}, "8 DELETE", "cancel while canceling %s" % body)
    await event(cl, jr, "canceled", backend=b.backend_id)
    # idempotent; already final ones are not listed
    status, _, body = await d.http("DELETE", "/v1/jobs/%d" % jr, schema="http/cancel_result.json", expect=200)
    t.check(body.get("canceled") is False and body.get("state") == "canceled", "8 DELETE", "second cancel %s" % body)
    m = await cl.request({"type": "cancel", "job": jq}, "canceled")
    t.check(m.get("jobs") == [], "7.3 cancel", "canceling a final job: %s" % m)
    m = await cl.request({"type": "cancel", "job": 987654}, "error", rid="x-unknown")
    t.check((m.get("type"), m.get("code"), m.get("id")) == ("error", "unknown_job", "x-unknown"), "7.3 cancel", "%s" % m)
    check_history(t, await d.job_info(jr), [(1, b.backend_id, "canceled", ANY)])
    check_history(t, await d.job_info(jq), [])


@scenario("6.4 a canceled job keeps its slot until the backend confirms")
async def cancel_keeps_slot(t):
    d = await t.daemon({"routing.overqueue": 0})
    b = await d.ready_backend("one-slot", ["video"])
    cl = await d.subscribed_client()
    j1, j2 = (await submit(cl, [{"kind": "video", "needs": ["video"], "count": 2}]))["jobs"]
    a1 = await b.assigned("the first job")
    await b.report("started", j1, a1["lease"])
    await event(cl, j1, "started")
    m = await cl.request({"type": "cancel", "job": j1}, "canceled")
    t.check(m.get("jobs") == [j1], "7.3 cancel", "canceled %s" % m)
    await b.expect("cancel", "cancel of the running job")
    await event(cl, j1, "canceling", state="running")
    # The backend is still stopping job 1: job 2 waits in the queue, nothing is assigned.
    q = (await cl.request({"type": "status"}, "status_report")).get("queue", {})
    t.check((q.get("queued"), q.get("running")) == (1, 1), "6.4 canceling", "queue while canceling %s" % q)
    t.check(not [x for x in b.inbox if x.get("type") == "assign" and x.get("job") == j2], "6.4 canceling",
            "job 2 was assigned before the cancel was confirmed")
    # Progress of a job being stopped is not stale, and not published.
    await b.report("progress", j1, a1["lease"], fraction=0.5)
    await b.report("failed", j1, a1["lease"], code="canceled", message="interrupted", retryable=False)
    a2 = await b.assigned("the second job, once the slot is free")
    t.check(a2["job"] == j2, "6.4 canceling", "assigned %s" % a2)
    await event(cl, j1, "canceled", backend=b.backend_id)
    t.check(cl.events.names(j1)[-2:] == ["canceling", "canceled"], "7.2 canceling", "events %s" % cl.events.names(j1))
    t.check(not [x for x in b.inbox if x.get("type") == "stale_lease" and x.get("job") == j1], "6.4 canceling",
            "a report while canceling was answered stale_lease")
    check_history(t, await d.job_info(j1), [(1, b.backend_id, "canceled", ANY)])


@scenario("7.3 cancel a batch")
async def cancel_batch(t):
    d = await t.daemon()
    b = await d.ready_backend("one-slot", ["video"])
    cl = await d.subscribed_client()
    acc = await submit(cl, [{"kind": "video", "needs": ["video"], "count": 3}])
    jobs = acc["jobs"]
    a1 = await b.assigned()
    a2 = await b.assigned()
    await b.report("started", a1["job"], a1["lease"])
    await event(cl, a1["job"], "started")
    m = await cl.request({"type": "cancel", "batch": acc["batch"]}, "canceled")
    t.check(sorted(m.get("jobs", [])) == sorted(jobs), "7.3 cancel", "batch cancel listed %s, jobs %s" % (m.get("jobs"), jobs))
    cancels = [await b.expect("cancel", "cancel %d" % i) for i in (1, 2)]
    t.check(sorted((c["job"], c["lease"]) for c in cancels) == sorted([(a1["job"], a1["lease"]), (a2["job"], a2["lease"])]),
            "7.3 cancel", "backend got %s" % short(cancels))
    for c in cancels:
        await b.report("failed", c["job"], c["lease"], code="canceled", message="stopped", retryable=False)
    for j in jobs:
        await event(cl, j, "canceled")
    m = await cl.request({"type": "cancel", "batch": 99999}, "error")
    t.check(m.get("code") == "unknown_batch", "7.3 cancel", "%s" % m)
    status, _, info = await d.http("GET", "/v1/batches/%d" % acc["batch"], schema="http/batch_info.json", expect=200)
    t.check(info.get("done") is True and all(x.get("state") == "canceled" for x in info.get("jobs", [])), "8 batch_info", "%s" % info)


@scenario("7.3 drain a remote and a local backend")
async def drain(t):
    local = {"name": "local-image", "kind": "simulated", "features": ["image"], "slots": 1, "job_seconds": {"default": 600}}
    d = await t.daemon(backends=[local])
    b = await d.ready_backend("leaving", ["video"])
    cl = await d.subscribed_client()
    (j,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    a = await b.assigned()
    await b.report("started", j, a["lease"])
    m = await cl.request({"type": "drain", "backend": b.backend_id}, "draining", rid="d1")
    t.check(m.get("backend") == b.backend_id and m.get("id") == "d1", "7.3 drain", "draining %s" % m)
    await b.expect("drain", "drain sent to the remote backend")
    await b.announce("draining", ["video"])
    # No new work for it.
    (j2,) = (await submit(cl, [{"kind": "video", "needs": ["video"]}]))["jobs"]
    await b.report("completed", j, a["lease"])
    await event(cl, j, "completed")
    await b.send({"type": "goodbye", "reason": "drained"})
    await b.close(1000)
    t.check(not [x for x in b.received if x.get("type") == "assign" and x.get("job") == j2], "7.3 drain", "a draining backend got a new job")
    # Idempotent; unknown ids; the local one over HTTP.
    m = await cl.request({"type": "drain", "backend": 4242}, "error")
    t.check(m.get("code") == "unknown_backend", "7.3 drain", "%s" % m)
    status, _, body = await d.http("POST", "/v1/backends/-1/drain", schema="http/draining.json", expect=202)
    t.check(body.get("backend") == -1, "8 drain", "%s" % body)
    await d.wait_http("/v1/backends", lambda s, body: any(x.get("id") == -1 and x.get("capabilities", {}).get("state") == "draining"
                                                          for x in body.get("backends", [])), "local -1 announcing draining")
    await d.http("POST", "/v1/backends/-1/drain", schema="http/draining.json", expect=202)
    await d.http("POST", "/v1/backends/777/drain", expect=404)
    # Its goodbye made the close deliberate: down at once, without the suspect grace (6.5).
    await d.wait_http("/v1/backends", lambda s, body: any(x.get("name") == "leaving" and x.get("link") == "down"
                                                          for x in body.get("backends", [])), "leaving down after its goodbye")


# ---------------------------------------------------------------------------------------------
# Handshake refusals


async def refused(t, peer, message, code, close, rid=None, rule="6.2 handshake"):
    if message is not None:
        await peer.send(message, valid=False)
    got = await peer.expect_close("close %d" % close)
    errors = [m for m in peer.received if m.get("type") == "error"]
    t.check(got == close, rule, "%s: closed with %s, spec says %d" % (peer.label(), got, close))
    codes = code if isinstance(code, tuple) else (code,)
    t.check(len(errors) == 1 and errors[0].get("code") in codes, rule,
            "%s: before the close: %s; spec: one error %s" % (peer.label(), short(peer.received), " or ".join(codes)))
    if errors and rid is not None:
        t.check(errors[0].get("id") == rid, "decision 5 id echo", "%s: %s error id %r, the message's id %r" % (peer.label(), code, errors[0].get("id"), rid))
    return errors[0] if errors else {}


@scenario("5 close 4001 bad credentials")
async def bad_token_4001(t):
    d = await t.daemon({"auth.token": "s3cret"})
    b = await d.backend("intruder")
    await refused(t, b, b.hello_message(token="wrong"), "bad_credentials", 4001, rid="h1")
    c = await d.client()
    e = await refused(t, c, c.hello_message(token=""), "bad_credentials", 4001, rid="h1")
    t.check("s3cret" not in json.dumps(e), "5 errors", "the error shows the token")
    ok = await d.client()
    await ok.hello(token="s3cret")
    await d.http("GET", "/v1/backends", expect=401)
    await d.http("GET", "/v1/backends", headers={"Authorization": "Bearer s3cret"}, schema="http/backend_list.json", expect=200)
    await d.http("GET", "/healthz", schema="http/health.json", expect=200)
    s, _, _ = await d.http("GET", "/readyz")
    t.check(s in (200, 503), "8 probes need no token", "/readyz without a token: %d" % s)
    await d.http("GET", "/metrics", expect=200, rule="8 probes need no token")


@scenario("5.1 credentials and roles, close 4007 forbidden")
async def forbidden_4007(t):
    folder = harness.scratch("creds-")
    creds = []
    for name, role in (("alice", "client"), ("bob", "client"), ("viewer", "read"), ("gpu-1", "backend")):
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write("%s-tok\n" % name)
        creds.append({"name": name, "role": role, "token_file": path})
    d = await t.daemon({"auth.credentials": json.dumps(creds)})

    def bearer(name):
        return {"Authorization": "Bearer %s-tok" % name}

    # Handshakes: a backend credential under another name, a client's on the backend link, a
    # backend's on the client link.
    b = await d.backend("gpu-2")
    e = await refused(t, b, b.hello_message(token="gpu-1-tok"), "forbidden", 4007, rid="h1", rule="5.1 roles")
    t.check("gpu-1-tok" not in json.dumps(e), "5 errors", "the error shows the token")
    b = await d.backend("gpu-1")
    await refused(t, b, b.hello_message(token="alice-tok"), "forbidden", 4007, rid="h1", rule="5.1 roles")
    c = await d.client()
    await refused(t, c, c.hello_message(token="gpu-1-tok"), "forbidden", 4007, rid="h1", rule="5.1 roles")
    b = await d.backend("gpu-1")
    await b.hello(token="gpu-1-tok")
    await d.http("GET", "/v1/backends", headers=bearer("gpu-1"), expect=403, rule="5.1 roles")

    # A client: welcome says its role and owner; drain is refused and the link stays up.
    alice = await d.client("alice")
    w = await alice.hello(token="alice-tok")
    t.check(w.get("role") == "client" and w.get("owner") == "alice", "5.1 welcome.role", "welcome %s" % short([w]))
    m = await alice.request({"type": "drain", "backend": b.backend_id}, "error")
    t.check(m.get("type") == "error" and m.get("code") == "forbidden", "5.1 roles", "drain by a client: %s" % short([m]))
    m = await alice.request({"type": "submit", "owner": "bob", "jobs": [{"kind": "image"}]}, "error")
    t.check(m.get("code") == "forbidden", "5.1 roles", "a client submitting as another owner: %s" % short([m]))
    acc = await alice.request({"type": "submit", "jobs": [{"kind": "image"}]}, "accepted")
    job = acc["jobs"][0]

    # Another client can neither see nor cancel alice's job; a read credential sees it only.
    await d.http("GET", "/v1/jobs/%d" % job, headers=bearer("bob"), expect=403, rule="5.1 roles")
    await d.http("DELETE", "/v1/jobs/%d" % job, headers=bearer("bob"), expect=403, rule="5.1 roles")
    await d.http("DELETE", "/v1/jobs/%d" % job, headers=bearer("viewer"), expect=403, rule="5.1 roles")
    await d.http("POST", "/v1/batches", body={"jobs": [{"kind": "image"}]}, headers=bearer("viewer"), expect=403, rule="5.1 roles")
    _, _, info = await d.http("GET", "/v1/jobs/%d" % job, headers=bearer("viewer"), schema="http/job_info.json", expect=200)
    t.check(isinstance(info, dict) and info.get("owner") == "alice", "5.1 roles", "job_info %s" % short([info]))
    bob = await d.client("bob")
    await bob.hello(token="bob-tok")
    m = await bob.request({"type": "cancel", "job": job}, "error")
    t.check(m.get("code") == "forbidden", "5.1 roles", "cancel of another owner's job: %s" % short([m]))
    await d.http("DELETE", "/v1/jobs/%d" % job, headers=bearer("alice"), schema="http/cancel_result.json", expect=200)


@scenario("5 limits per peer: quota_exceeded, close 4009 too_many_links")
async def limits_per_peer(t):
    d = await t.daemon({"jobs.max_in_flight_per_owner": "2", "routing.no_eligible_backend": "queue",
                        "links.max_per_address": "1"})
    c = await d.client()
    await c.hello()
    # The second link from this address is one too many: the error, then 4009.
    other = await d.client("other")
    await refused(t, other, None, "too_many_links", 4009, rule="5 limits")
    acc = await c.request({"type": "submit", "owner": "ana", "jobs": [{"kind": "image", "count": 2}]}, "accepted")
    t.check(len(acc.get("jobs", [])) == 2, "7.1 accepted", "%s" % acc)
    e = await c.request({"type": "submit", "owner": "ana", "jobs": [{"kind": "image"}]}, "error")
    t.check(e.get("code") == "quota_exceeded", "5 limits", "a submit over the owner's quota: %s" % short([e]))
    t.check(e.get("details", {}).get("limit") == 2 and e.get("details", {}).get("in_flight") == 2, "5 limits",
            "quota details %s" % e.get("details"))
    await d.http("POST", "/v1/batches", body={"owner": "ana", "jobs": [{"kind": "image"}]}, expect=429, rule="5 limits")
    await c.request({"type": "submit", "owner": "bo", "jobs": [{"kind": "image"}]}, "accepted")
    await c.request({"type": "cancel", "job": acc["jobs"][0]}, "canceled")
    await c.request({"type": "submit", "owner": "ana", "jobs": [{"kind": "image"}]}, "accepted")


@scenario("5 close 4002 no common version")
async def no_common_version_4002(t):
    d = await t.daemon()
    for peer in (await d.backend("future"), await d.client()):
        e = await refused(t, peer, peer.hello_message(versions=[2, 3]), "no_common_version", 4002, rid="h1")
        t.check(e.get("details", {}).get("supported") == [1], "3 versioning", "details %s" % e.get("details"))


@scenario("5 close 4003 wrong role")
async def wrong_role_4003(t):
    d = await t.daemon()
    b = await d.backend("confused")
    await refused(t, b, b.hello_message(role="client"), "wrong_role", 4003, rid="h1")
    c = await d.client()
    msg = dict(c.hello_message(role="backend"), incarnation=1, slots=1)
    await refused(t, c, msg, "wrong_role", 4003, rid="h1")


@scenario("5 close 4004 hello timeout")
async def hello_timeout_4004(t):
    d = await t.daemon({"links.handshake_timeout_seconds": "1"})
    for peer in (await d.backend("silent"), await d.client()):
        await refused(t, peer, None, "hello_timeout", 4004)


@scenario("decision 2: goodbye replaced, close 4005")
async def replaced_4005(t):
    d = await t.daemon()
    old = await d.ready_backend("twin", ["video"])
    new = await d.backend("twin", incarnation=old.incarnation)
    w = await new.hello()
    t.check(w.get("backend") == old.backend_id, "6.2 one link per name", "new link id %s, old %s" % (w.get("backend"), old.backend_id))
    got = await old.expect_close("close 4005")
    t.check(got == 4005, "6.2 one link per name", "old link closed with %s, spec says 4005" % got)
    last = [m for m in old.received if m.get("type") in ("goodbye", "error")]
    t.check(len(last) == 1 and last[0].get("type") == "goodbye" and last[0].get("reason") == "replaced", "decision 2 replaced",
            "before 4005 the old link got %s; spec: goodbye reason replaced and no error" % short(last))
    t.check(bool(last) and isinstance(last[0].get("message"), str) and last[0].get("message") != "", "decision 2 replaced",
            "the goodbye before 4005 has no message: %s" % short(last))
    t.check(w.get("known") == {"incarnation": old.incarnation, "revision": 1}, "6.2 welcome",
            "the replacing link (same incarnation) got known %s" % w.get("known"))
    await new.barrier()


@scenario("6.2 stale incarnation, close 1008")
async def stale_incarnation_1008(t):
    d = await t.daemon()
    cur = await d.ready_backend("phoenix", ["video"])
    old = await d.backend("phoenix", incarnation=cur.incarnation - 5000)
    e = await refused(t, old, old.hello_message(id="h-old"), "stale_incarnation", 1008, rid="h-old")
    t.check(e.get("details") == {"incarnation": cur.incarnation}, "5 stale_incarnation",
            "details %s, the incarnation known %d" % (e.get("details"), cur.incarnation))
    cur.revision += 1
    await cur.send(cur.snapshot("ready", ["video", "image"]))
    ack = await cur.expect("capabilities_ack", "the current link still answered")
    t.check(ack.get("applied") is True, "6.2", "the current link after a stale hello: %s" % ack)


@scenario("6.2 messages before hello, close 1008")
async def message_before_hello_1008(t):
    d = await t.daemon()
    c = await d.client()
    await refused(t, c, {"type": "status", "id": "s1"}, "not_registered", 1008, rid="s1")
    b = await d.backend("eager")
    await refused(t, b, b.snapshot("ready", ["video"], revision=1), "not_registered", 1008)
    b = await d.backend("eager2")
    await refused(t, b, {"type": "started", "id": "x1", "job": 1, "lease": 1}, "not_registered", 1008, rid="x1")
    # An unknown type before hello: section 2 says unknown_type (and, before welcome, close 1008),
    # section 6.2 says any message other than hello is not_registered. The spec allows both today.
    c = await d.client("early-unknown")
    await refused(t, c, {"type": "teleport", "id": "z1"}, ("unknown_type", "not_registered"), 1008, rid="z1")


@scenario("6.2 second hello, close 1008")
async def second_hello_1008(t):
    d = await t.daemon()
    b = await d.backend("twice")
    await b.hello()
    await refused(t, b, b.hello_message(id="h2"), "unexpected_message", 1008, rid="h2")
    c = await d.client()
    await c.hello()
    await refused(t, c, c.hello_message(id="h2"), "unexpected_message", 1008, rid="h2")


@scenario("decision 4: invalid hello, close 1008 at once")
async def invalid_hello_1008(t):
    # With a short handshake timeout a daemon that waits for it closes with 4004, not 1008: the
    # close code, not the time it took, tells "at once" from "after the timeout".
    d = await t.daemon({"links.handshake_timeout_seconds": "5"})
    nameless = await d.backend("bad")
    m = nameless.hello_message(id="h-bad")
    del m["name"]
    long_token = await d.backend("bad2")
    malformed = await d.client("malformed")
    bad_name = await d.client("bad-name")
    await asyncio.gather(
        refused(t, nameless, m, "invalid_message", 1008, rid="h-bad", rule="decision 4"),
        refused(t, long_token, long_token.hello_message(id="h-long", token="t" * 1025), "limit_exceeded", 1008, rid="h-long",
                rule="decision 4"),
        refused(t, malformed, '{"type": "hello", "id": "h-mal", ', "malformed_json", 1008, rule="decision 4"),
        refused(t, bad_name, bad_name.hello_message(id="h-name", name="no spaces allowed"), "invalid_message", 1008, rid="h-name",
                rule="decision 4"))


@scenario("decision 1: subprotocol negotiation")
async def subprotocol_negotiation(t):
    d = await t.daemon()
    for offer in (None, "chat.v2"):
        raw = RawWS(d.port)
        status, headers, body = await asyncio.to_thread(raw.upgrade, offer)
        raw.close()
        t.check(status == 400, "decision 1 none", "upgrade offering %r: HTTP %s, spec says 400" % (offer, status))
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        t.check(isinstance(parsed, dict) and not SCHEMA.errors("http/error_body.json", parsed)
                and parsed.get("code") == "invalid_message", "decision 1 none",
                "upgrade offering %r: body %r, spec: error body invalid_message" % (offer, body[:200]))
    for first, second in ((CLIENT, BACKEND), (BACKEND, CLIENT)):
        raw = RawWS(d.port)
        status, headers, _ = await asyncio.to_thread(raw.upgrade, "%s, %s" % (first, second))
        raw.close()
        t.check(status == 101 and headers.get("sec-websocket-protocol") == first, "decision 1 both",
                "offering %s, %s: %s selected %r; spec: the first listed" % (first, second, status, headers.get("sec-websocket-protocol")))
    p = harness.Peer(t, d, BACKEND, "both-ways")
    await p.connect([BACKEND, CLIENT])
    t.check(p.ws.subprotocol == BACKEND, "decision 1 both", "selected %r" % p.ws.subprotocol)
    await p.hello()


# ---------------------------------------------------------------------------------------------
# Framing


@scenario("2 framing errors")
async def framing_errors(t):
    d = await t.daemon({"links.max_message_bytes": "4096"})
    c = await d.client()
    w = await c.hello()
    t.check(w.get("max_message_bytes") == 4096, "2 framing", "welcome.max_message_bytes %s with the limit at 4096" % w.get("max_message_bytes"))
    await c.send('{"type": "status", "id": "m1", ')
    e = await c.expect("error", "malformed_json")
    t.check(e.get("code") == "malformed_json", "2 framing", "%s" % e)
    e = await c.request({"type": "teleport"}, "error", rid="u1")
    t.check((e.get("code"), e.get("id")) == ("unknown_type", "u1"), "2 unknown type", "%s" % e)
    e = await c.request({"type": "submit", "jobs": [{"kind": "image", "count": "four"}]}, "error", rid="i1")
    t.check(e.get("code") == "invalid_message" and e.get("message", "").startswith("jobs[0].count"), "2 invalid_message path",
            "%s; spec: the message names jobs[0].count" % e)
    deep = '{"type": "submit", "id": "deep1", "jobs": [{"kind": "image", "params": {"p": %s}}]}' % ("[" * 70 + "]" * 70)
    await c.send(deep)
    e = await c.expect(lambda m: m.get("type") == "error" and m.get("code") == "limit_exceeded", "the nesting limit")
    t.check(e.get("id") == "deep1", "decision 5 id echo", "nesting-depth limit_exceeded id %r, the message's id deep1 came first" % e.get("id"))
    await c.request({"type": "status"}, "status_report")  # the link stays up
    # error and goodbye are common to both links in both directions (section 10): not answered.
    seen = len(c.received)
    await c.send(json.dumps({"type": "error", "code": "invalid_message", "message": "could not read an event"}))
    await c.send(json.dumps({"type": "goodbye", "reason": "restart"}))
    r = await c.request({"type": "status"}, "status_report", rid="after-common")
    answered = [m for m in c.received[seen:] if m.get("type") == "error"]
    t.check(r.get("type") == "status_report" and not answered, "10 common messages on the client link",
            "error and goodbye from a client are taken without an answer; got %s, then %s" % (answered, r))
    await c.send(json.dumps({"type": "status", "id": "big", "pad": "x" * 8000}))
    t.check(await c.expect_close("close 1009") == 1009, "2 oversize", "oversize: %r" % c.closed)
    c2 = await d.client()
    await c2.hello()
    await c2.send_raw(b'{"type": "status"}')
    t.check(await c2.expect_close("close 1003") == 1003, "2 binary", "binary frame: %r" % c2.closed)
    raw = RawWS(d.port)
    status, _, _ = await asyncio.to_thread(raw.upgrade, CLIENT)
    t.require(status == 101, "7", "upgrade %s" % status)
    await asyncio.to_thread(raw.send_text, json.dumps({"type": "hello", "id": "h1", "role": "client", "name": "utf8",
                                                         "token": "", "versions": [1]}))
    await asyncio.to_thread(raw.send_frame, 0x1, b'{"type": "status", "id": "\xff\xfe"}')
    code = await asyncio.to_thread(raw.close_code)
    raw.close()
    t.check(code == 1007, "2 invalid UTF-8", "a text frame that is not UTF-8: close %s, spec says 1007" % code)
    b = await d.backend("framer")
    await b.hello()
    await b.send('[1, 2')
    e = await b.expect("error", "malformed_json on the backend link")
    t.check(e.get("code") == "malformed_json", "2 framing", "%s" % e)
    e = await b.request({"type": "warp"}, "error", rid="t1")
    t.check((e.get("code"), e.get("id")) == ("unknown_type", "t1"), "2 unknown type", "%s" % e)
    await b.announce("ready", ["video"])


# ---------------------------------------------------------------------------------------------
# Client requests, HTTP API, probes


@scenario("7 client requests")
async def client_requests(t):
    d = await t.daemon()
    b = await d.ready_backend("loader", ["image"], models=["sdxl"])
    c = await d.client()
    await c.hello()
    r = await c.request({"type": "status"}, "status_report")
    t.check([x.get("name") for x in r.get("backends", [])] == ["loader"] and r.get("readiness", {}).get("ready") is True,
            "7.3 status", "status_report %s" % short([r]))
    q = r.get("queue", {})
    t.check((q.get("queued"), q.get("gated"), q.get("bound"), q.get("running")) == (0, 0, 0, 0), "7.3 status", "queue %s" % q)
    acc = await submit(c, [{"kind": "image", "count": 2, "priority": 5}], batch_key="k-1", owner="alice")
    t.check(acc.get("duplicate") is False and len(acc.get("jobs", [])) == 2, "7.1 accepted", "%s" % acc)
    dup = await submit(c, [{"kind": "image", "count": 2, "priority": 5}], batch_key="k-1", owner="alice")
    t.check((dup.get("batch"), dup.get("jobs"), dup.get("duplicate")) == (acc["batch"], acc["jobs"], True), "7.1 batch_key",
            "retry got %s, original %s" % (dup, acc))
    e = await c.request({"type": "submit", "batch_key": "k-1", "jobs": [{"kind": "video"}]}, "error")
    t.check(e.get("code") == "batch_key_conflict" and e.get("details", {}).get("batch") == acc["batch"], "7.1 batch_key", "%s" % e)
    s = await c.request({"type": "subscribe", "batch": acc["batch"]}, "subscribed")
    t.check(s.get("batch") == acc["batch"], "7.2 subscribe", "%s" % s)
    snaps = [await c.expect(lambda m, j=j: m.get("type") == "job" and m.get("job") == j and m.get("event") == "snapshot",
                            "snapshot of job %d" % j) for j in acc["jobs"]]
    t.check(all(x.get("batch") == acc["batch"] for x in snaps), "7.2 snapshot", "%s" % short(snaps))
    m = await c.request({"type": "load_model", "model": "sdxl"}, "models_loading")
    t.check((m.get("model"), m.get("backends")) == ("sdxl", [b.backend_id]), "7.3 load_model", "%s" % m)
    lm = await b.expect("load_model", "load_model sent to the backend")
    t.check(lm.get("model") == "sdxl" and isinstance(lm.get("id"), str), "6.4 load_model", "%s" % lm)
    await b.send({"type": "load_model_result", "id": lm["id"], "model": "sdxl", "ok": True, "duration_ms": 10})
    # Asked again (the backend has not announced it loaded): a new request, with an id of its own.
    await c.request({"type": "load_model", "model": "sdxl", "backend": b.backend_id}, "models_loading")
    again = await b.expect("load_model", "a second load_model sent to the backend")
    t.check(again.get("id") != lm.get("id"), "6.4 load_model", "ids %r and %r" % (lm.get("id"), again.get("id")))
    await b.send({"type": "load_model_result", "id": again["id"], "model": "sdxl", "ok": True, "duration_ms": 10})
    e = await c.request({"type": "load_model", "model": "nope"}, "error")
    t.check(e.get("code") == "unknown_model", "7.3 load_model", "%s" % e)
    e = await c.request({"type": "load_model", "model": "sdxl", "backend": 31337}, "error")
    t.check(e.get("code") == "unknown_backend", "7.3 load_model", "%s" % e)
    await c.barrier()
    for rid, n in c.answers.items():
        t.check(n == 1, "7 one answer per request", "id %r answered %d times" % (rid, n))
    t.check(all(i in c.answers for i in c.sent_ids), "7 one answer per request",
            "unanswered: %s" % [i for i in c.sent_ids if i not in c.answers])


@scenario("7.2 a late subscriber's snapshots say when each job started and ended")
async def snapshot_times(t):
    d = await t.daemon()
    b = await d.ready_backend("gpu", ["image"], slots=2)
    early = await d.subscribed_client("early")
    ja, jb = (await submit(early, [{"kind": "image", "count": 2}]))["jobs"]
    aa, ab = await b.assigned("job a"), await b.assigned("job b")
    await b.report("started", ja, aa["lease"])
    await b.report("started", jb, ab["lease"])
    started_a, started_b = await event(early, ja, "started"), await event(early, jb, "started")
    await b.report("completed", jb, ab["lease"])
    completed_b = await event(early, jb, "completed")
    late = await d.client("late")
    await late.hello()
    await late.request({"type": "subscribe", "batch": started_a["batch"]}, "subscribed")
    sa = await late.expect(lambda m: m.get("type") == "job" and m.get("job") == ja and m.get("event") == "snapshot", "snapshot of a")
    sb = await late.expect(lambda m: m.get("type") == "job" and m.get("job") == jb and m.get("event") == "snapshot", "snapshot of b")
    t.check(sa.get("state") == "running" and sa.get("started_ms") == started_a["at_ms"] and "finished_ms" not in sa,
            "7.2 snapshot started_ms", "running job's snapshot %s; its started event at %s" % (sa, started_a["at_ms"]))
    t.check(sb.get("state") == "completed" and sb.get("started_ms") == started_b["at_ms"]
            and sb.get("finished_ms") == completed_b["at_ms"],
            "7.2 snapshot finished_ms", "ended job's snapshot %s; started at %s, completed at %s"
            % (sb, started_b["at_ms"], completed_b["at_ms"]))
    await b.report("completed", ja, aa["lease"])
    await event(late, ja, "completed")


@scenario("8 HTTP API routes and error shapes")
async def http_api(t):
    d = await t.daemon({"http.max_body_bytes": "2048", "routing.no_eligible_backend": "queue"})
    status, hdrs, acc = await d.http("POST", "/v1/batches", {"jobs": [{"kind": "image", "count": 2}], "batch_key": "h-1"},
                                     schema="http/accepted.json", expect=201)
    t.check(hdrs.get("location") == "/v1/batches/%s" % acc.get("batch"), "8 POST /v1/batches", "Location %r" % hdrs.get("location"))
    t.check(acc.get("duplicate") is False, "8 POST /v1/batches", "%s" % acc)
    status, _, dup = await d.http("POST", "/v1/batches", {"jobs": [{"kind": "image", "count": 2}], "batch_key": "h-1"},
                                  schema="http/accepted.json", expect=200)
    t.check(dup.get("duplicate") is True and dup.get("jobs") == acc.get("jobs"), "8 POST /v1/batches", "%s" % dup)
    status, _, e = await d.http("POST", "/v1/batches", {"jobs": [{"kind": "video"}], "batch_key": "h-1"}, expect=409)
    t.check(e.get("code") == "batch_key_conflict" and e.get("details", {}).get("batch") == acc.get("batch"), "8", "%s" % e)
    status, _, info = await d.http("GET", "/v1/batches/%s" % acc["batch"], schema="http/batch_info.json", expect=200)
    t.check(info.get("batch_key") == "h-1" and [x.get("job") for x in info.get("jobs", [])] == acc["jobs"] and info.get("done") is False,
            "8 batch_info", "%s" % info)
    j = await d.job_info(acc["jobs"][0])
    t.check((j.get("state"), j.get("attempt"), j.get("owner"), j.get("params"), j.get("history")) == ("queued", 0, "anonymous", {}, []),
            "8 job_info", "%s" % j)
    for method, path, body, code, st in [
        ("GET", "/v1/batches/424242", None, "unknown_batch", 404),
        ("GET", "/v1/jobs/424242", None, "unknown_job", 404),
        ("GET", "/v1/jobs/abc", None, "invalid_message", 400),
        ("GET", "/v1/jobs/+1", None, "invalid_message", 400),
        ("GET", "/v1/jobs/01", None, "invalid_message", 400),
        ("DELETE", "/v1/jobs/424242", None, "unknown_job", 404),
        ("GET", "/v1/nothing", None, "not_found", 404),
        ("PUT", "/v1/jobs/1", None, "method_not_allowed", 405),
        ("POST", "/v1/batches", '{"jobs": [', "malformed_json", 400),
        ("POST", "/v1/batches", {"jobs": [{"kind": "Image"}]}, "invalid_message", 400),
        ("POST", "/v1/batches", {"owner": "o" * 200, "jobs": [{"kind": "image"}]}, "limit_exceeded", 413),
        ("POST", "/v1/batches", {"jobs": [{"kind": "image", "params": {"p": "x" * 4000}}]}, "message_too_large", 413),
        ("POST", "/v1/models/load", {"model": "nothing"}, "unknown_model", 404),
        ("POST", "/v1/backends/999/drain", None, "unknown_backend", 404),
    ]:
        s, h, e = await d.http(method, path, body, expect=st)
        t.check(isinstance(e, dict) and e.get("code") == code, "8 errors", "%s %s: %s, spec says %d %s" % (method, path, e, st, code))
        if st == 405:
            t.check("GET" in h.get("allow", "") and "DELETE" in h.get("allow", ""), "8 405", "Allow %r" % h.get("allow"))
    await d.http("GET", "/v1/backends", schema="http/backend_list.json", expect=200)
    b = await d.ready_backend("loader", ["image"], models=["sdxl"])
    s, _, ml = await d.http("POST", "/v1/models/load", {"model": "sdxl"}, schema="http/models_loading.json", expect=202)
    t.check((ml.get("model"), ml.get("backends")) == ("sdxl", [b.backend_id]), "8 models/load", "%s" % ml)
    await b.expect("load_model", "load_model after POST /v1/models/load")
    s, h, body = await d.http("GET", "/metrics", expect=200)
    t.check(h.get("content-type", "").startswith("text/plain") and "muster_" in body, "8 metrics", "content-type %r" % h.get("content-type"))
    s, _, health = await d.http("GET", "/healthz", schema="http/health.json", expect=200)


@scenario("8 /readyz body")
async def readyz(t):
    d = await t.daemon()
    s, _, body = await d.http("GET", "/readyz", schema="http/readiness.json", expect=503)
    t.check(body.get("ready") is False and "no_ready_backend" in body.get("reasons", []) and body.get("ready_backends") == 0,
            "8 readyz", "with no backend: %s" % body)
    b = await d.ready_backend("ready-one", ["image"])
    s, _, body = await d.http("GET", "/readyz", schema="http/readiness.json", expect=200)
    t.check(body == {"ready": True, "reasons": [], "ready_backends": 1, "held_jobs": 0, "waiting": []}, "8 readyz", "ready: %s" % body)
    c = await d.client()
    await c.hello()
    r = await c.request({"type": "status"}, "status_report")
    t.check(r.get("readiness") == body, "7.3 status", "status_report.readiness %s, /readyz %s" % (r.get("readiness"), body))
    await b.announce("loading", ["image"])
    s, _, body = await d.http("GET", "/readyz", schema="http/readiness.json", expect=503)
    t.check(body.get("ready") is False and "no_ready_backend" in body.get("reasons", []), "8 readyz", "only a loading backend: %s" % body)


@scenario("decision 12: heartbeat_ms and silent links")
async def heartbeat(t):
    d = await t.daemon({"links.keepalive_seconds": "2"})
    c = await d.client()
    w = await c.hello()
    t.check(w.get("heartbeat_ms") == 1000, "decision 12", "heartbeat_ms %s with links.keepalive_seconds=2; spec: 1000" % w.get("heartbeat_ms"))
    b = await d.backend("hb")
    w = await b.hello()
    t.check(w.get("heartbeat_ms") == 1000, "decision 12", "backend heartbeat_ms %s; spec: 1000" % w.get("heartbeat_ms"))
    # A raw peer that never answers pings: pinged, then dropped without a close frame.
    raw = RawWS(d.port)
    status, _, _ = await asyncio.to_thread(raw.upgrade, CLIENT)
    t.require(status == 101, "7", "upgrade %s" % status)
    await asyncio.to_thread(raw.send_text, json.dumps({"type": "hello", "id": "h1", "role": "client", "name": "mute",
                                                         "token": "", "versions": [1]}))

    def frames():
        seen = []
        try:
            while True:
                seen.append(raw.read_frame()[0])
        except (EOFError, OSError):
            return seen
    seen = await asyncio.to_thread(frames)
    raw.close()
    t.check(0x9 in seen, "2 heartbeats", "no ping reached a silent link; frames %s" % seen)
    t.check(0x8 not in seen, "2 heartbeats", "a dead link got a close frame; frames %s" % seen)


@scenario("6.5 shutdown: goodbye, then close 1001")
async def shutdown_goodbye(t):
    d = await t.daemon()
    b = await d.ready_backend("stayer", ["image"])
    c = await d.client()
    await c.hello()
    d.proc.send_signal(signal.SIGTERM)
    for peer in (b, c):
        code = await peer.expect_close("close 1001 at shutdown")
        t.check(code == 1001, "5 close codes", "%s: closed with %s at shutdown, spec says 1001" % (peer.label(), code))
        byes = [m for m in peer.received if m.get("type") == "goodbye"]
        t.check(len(byes) == 1 and byes[0].get("reason") in ("shutdown", "restart") and peer.received[-1] is byes[0],
                "6.5 goodbye", "%s: before the close %s; spec: goodbye (shutdown) last" % (peer.label(), short(peer.received[-2:])))


@scenario("2 opaque values, progress, unknown members")
async def opaque_values(t):
    d = await t.daemon()
    b = await d.backend("opaque")
    await b.hello(future_member={"x": [1, 2]})  # unknown members are ignored
    await b.announce("ready", ["image"])
    cl = await d.subscribed_client()
    params = '{"prompt": "a \\u00e9 lighthouse",  "n": 1.50e2, "big": 18446744073709551616, "nested": {"z": [1.0, -0]}}'
    cl.sent_ids.append("op1")
    await cl.send('{"type": "submit", "id": "op1", "jobs": [{"kind": "image", "params": %s}], "colour": "blue"}' % params)
    acc = await cl.expect(lambda m: m.get("id") == "op1", "the answer to the submit with opaque params")
    t.require(acc.get("type") == "accepted", "7.1", "submit with opaque params: %s" % acc)
    (j,) = acc["jobs"]
    a = await b.assigned()
    raw = b.raw_text[id(a)]
    t.check('"params":%s' % params in raw or '"params": %s' % params in raw, "2 opaque values",
            "assign does not carry params byte for byte: sent %s, got %s" % (params, raw[:400]))
    await b.report("started", j, a["lease"])
    await b.report("progress", j, a["lease"], fraction=0.5, message="half way")
    p = await event(cl, j, "progress")
    t.check((p.get("progress"), p.get("message"), p.get("state"), p.get("backend")) == (0.5, "half way", "running", b.backend_id),
            "7.2 progress", "progress event %s" % p)
    info = await d.job_info(j)
    t.check(info.get("progress") == 0.5 and info.get("state") == "running" and "started_ms" in info, "8 job_info", "%s" % info)
    result = '{"frames": [1, 2.50, 3e2], "text": "\\ud83d\\ude00"}'
    b.sent_types.append("completed")
    await b.send('{"type": "completed", "job": %d, "lease": %d, "result": %s}' % (j, a["lease"], result))
    c = await event(cl, j, "completed")
    raw = cl.raw_text[id(c)]
    t.check('"result":%s' % result in raw or '"result": %s' % result in raw, "2 opaque values",
            "the completed event does not carry the result byte for byte: sent %s, got %s" % (result, raw[:400]))
    info = await d.job_info(j)
    t.check("finished_ms" in info and info.get("state") == "completed", "8 job_info", "%s" % info)


@scenario("decision 11: README speaks the protocol's names")
async def readme_names(t):
    with open(os.path.join(harness.ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    for name in ("announced", "window_elapsed", "idle_backend", "gate_disabled"):
        t.check("`%s`" % name in text, "decision 11", "README does not name the release cause `%s`" % name)
    for swift_name in ("backendsAnnounced", "windowExpired", "idleBackend"):
        t.check(swift_name not in text, "decision 11", "README names a release cause %r, not the protocol's name" % swift_name)
    t.check("stale_lease" in text, "decision 11", "README does not say a report under a dead lease gets stale_lease")
    wrong = re.search(r"dead lease[^.]*\brevoke\b[^.]*\.", text.replace("\n", " "))
    t.check(not wrong, "decision 11", "README: %r; spec 6.4: such a report is answered stale_lease"
            % (wrong.group(0) if wrong else ""))


# ---------------------------------------------------------------------------------------------


async def run_one(name, rule, fn, muster):
    t = Ctx(name, muster)
    started = time.monotonic()
    try:
        await asyncio.wait_for(fn(t), WAIT * 4)
    except ScenarioStop as e:
        t.failures.append(str(e))
    except asyncio.TimeoutError:
        t.failures.append("[bound] the scenario did not finish within %gs" % (WAIT * 4))
    except Exception:  # noqa: BLE001 - a bug in the scenario is a failure too
        t.failures.append("[harness] " + traceback.format_exc(limit=4))
    finally:
        try:
            await t.close()
        except Exception:  # noqa: BLE001
            pass
    out = {"rule": rule, "ok": not t.failures, "failures": t.failures, "seconds": round(time.monotonic() - started, 2)}
    if t.failures:
        out["daemon_log_tail"] = [line[:300] for d in t.daemons for line in d.log[-15:]]
    return name, out


async def main_async(args):
    chosen = [s for s in SCENARIOS if not args.scenarios or s[0] in args.scenarios]
    unknown = set(args.scenarios) - {s[0] for s in SCENARIOS}
    if unknown:
        raise SystemExit("unknown scenarios: %s" % sorted(unknown))
    sem = asyncio.Semaphore(args.jobs)

    async def guarded(s):
        async with sem:
            return await run_one(s[0], s[1], s[2], args.muster)
    results = dict(await asyncio.gather(*(guarded(s) for s in chosen)))
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--muster")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    if args.list:
        for name, rule, _ in SCENARIOS:
            print("%s\t%s" % (name, rule))
        return 0
    if not args.muster:
        ap.error("--muster PATH is required")
    signal.signal(signal.SIGTERM, terminate_started)
    results = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps({"scenarios": results}))
    else:
        for name, r in results.items():
            print("%s %-28s %-45s %5.1fs" % ("ok  " if r["ok"] else "FAIL", name, r["rule"], r["seconds"]))
            for f in r["failures"]:
                print("      " + f.replace("\n", "\n      "))
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
