#!/usr/bin/python3
"""Muster against real ComfyUI servers: a coordinator, agents and two ComfyUIs, all real processes.

Usage: comfyui_real.py MUSTER_BINARY PEER_DIR VENV_DIR [--bench JOBS]
A is the peer's ComfyUI as is (ComfyUI-Frame-Interpolation's `RIFE VFI` and the test node
`MusterSlowPassthrough`); B runs with --disable-all-custom-nodes. Each check prints PASS or FAIL;
the exit status is 1 when any failed. Every wait is bounded (generous: ComfyUI takes 10 s to a few
minutes to start on a loaded machine), and every process started here is stopped at the end.
"""
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import os
import threading
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

MUSTER, PEER, VENV = sys.argv[1], sys.argv[2], sys.argv[3]
BENCH = int(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--bench" else None
WORK = tempfile.mkdtemp(prefix="muster-comfyui-")
PROCS = {}
FAILED = []
START_WAIT = float(os.environ.get("MUSTER_COMFYUI_START_SECONDS", "300"))


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def check(name, ok, detail=""):
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not detail else f": {detail}"), flush=True)
    if not ok:
        FAILED.append(name)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            return r.status, raw
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def get_json(url, timeout=30):
    status, raw = http("GET", url, timeout=timeout)
    return status, (json.loads(raw) if raw[:1] in (b"{", b"[") else raw)


def wait_for(what, predicate, timeout, interval=0.25):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(interval)
    log(f"timed out after {timeout} s waiting for {what}")
    return None


# --- processes -----------------------------------------------------------------------------------

def start_comfyui(key, port, *flags):
    run = os.path.join(WORK, key)
    for sub in ("out", "tmp", "in", "user"):
        os.makedirs(os.path.join(run, sub), exist_ok=True)
    args = [os.path.join(VENV, "bin", "python"), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
            "--disable-auto-launch", "--disable-api-nodes", "--output-directory", f"{run}/out",
            "--temp-directory", f"{run}/tmp", "--input-directory", f"{run}/in", "--user-directory", f"{run}/user",
            "--database-url", "sqlite:///:memory:", *flags]
    out = open(os.path.join(run, "server.log"), "ab")
    PROCS[key] = subprocess.Popen(args, cwd=os.path.join(PEER, "ComfyUI"), stdout=out, stderr=subprocess.STDOUT)
    return run


def comfy_up(port):
    return http("GET", f"http://127.0.0.1:{port}/system_stats", timeout=5)[0] == 200


def start_muster(key, *args):
    out = open(os.path.join(WORK, f"{key}.log"), "ab")
    # Each coordinator keeps its jobs in a store of its own under the work directory.
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(WORK, f"state-{key}"))
    PROCS[key] = subprocess.Popen([MUSTER, *args], stdout=out, stderr=subprocess.STDOUT, env=env)


def stop(key, sig=signal.SIGTERM):
    p = PROCS.pop(key, None)
    if p and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def muster(*args, timeout=300):
    return subprocess.run([MUSTER, *args], capture_output=True, text=True, timeout=timeout)


# --- the coordinator's view ----------------------------------------------------------------------

def backends(port):
    return {b["name"]: b for b in get_json(f"http://127.0.0.1:{port}/v1/backends")[1]["backends"]}


def backend_state(port, name):
    b = backends(port).get(name)
    return (b or {}).get("capabilities", {}).get("state")


def job(port, jid):
    return get_json(f"http://127.0.0.1:{port}/v1/jobs/{jid}")[1]


def submit(port, workflow, count=1, *extra, wait=False):
    args = ["submit", "--coordinator", f"ws://127.0.0.1:{port}", "--workflow", workflow, "--count", str(count), "--json",
            *extra]
    if wait:
        args.append("--wait")
    return muster(*args)


def accepted_jobs(proc):
    for line in proc.stdout.splitlines():
        o = json.loads(line)
        if o.get("type") == "accepted" or "jobs" in o and "batch" in o:
            return o["jobs"]
    raise ValueError(f"no accepted line in {proc.stdout!r} {proc.stderr!r}")


def events(proc):
    # A job's final line is its final event, or, when it ended before `submit --wait` subscribed
    # (its `accepted` waits for the job store's commit), the `snapshot` showing the final state:
    # select finals by `state`, not by `event`.
    return [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{") and '"event"' in l]


def write_workflow(name, graph):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        json.dump(graph, f)
    return path


def workflow(name):
    with open(os.path.join(PEER, "workflows", name)) as f:
        return json.load(f)


def comfy_queue(port):
    q = get_json(f"http://127.0.0.1:{port}/queue")[1]
    def jobs_of(entries):
        return [(e[1], e[3].get("muster_job")) for e in entries]
    return jobs_of(q["queue_running"]), jobs_of(q["queue_pending"])


class Garbage(BaseHTTPRequestHandler):
    """A server that answers every request with HTML, as a wrong URL (a web page) would."""
    def do_GET(self):
        body = b"<html><body>not ComfyUI</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def main():
    pa, pb, pc, pd = free_port(), free_port(), free_port(), free_port()
    A, B = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
    core = os.path.join(PEER, "workflows", "core.json")
    slow = os.path.join(PEER, "workflows", "slow.json")
    slow_graph = workflow("slow.json")
    long_graph = json.loads(json.dumps(slow_graph))
    long_graph["2"]["inputs"].update({"steps": 1200, "step_seconds": 0.25})
    long_wf = write_workflow("long.json", long_graph)

    log(f"work dir {WORK}; ComfyUI A on {pa}, B on {pb}; coordinator on {pc}")
    run_a = start_comfyui("comfy-a", pa)
    start_muster("coordinator", "serve", "--listen", f"127.0.0.1:{pc}", "--set", "backends=[]",
                 "--set", "gate.window_seconds=600", "--set", "links.suspect_grace_seconds=5")
    wait_for("the coordinator", lambda: http("GET", f"http://127.0.0.1:{pc}/healthz", timeout=2)[0] == 200, 60)
    start_muster("agent-a", "agent", "--coordinator", f"ws://127.0.0.1:{pc}", "--name", "comfy-a", "--comfyui", A)
    start_muster("agent-b", "agent", "--coordinator", f"ws://127.0.0.1:{pc}", "--name", "comfy-b", "--comfyui", B)

    # B's ComfyUI is not started yet: its backend says why it is loading.
    b = wait_for("comfy-b loading with a reason",
                 lambda: (backends(pc).get("comfy-b") or {}).get("capabilities", {}).get("message"), 60)
    check("an unreachable ComfyUI makes its backend announce loading with the reason",
          b is not None and backend_state(pc, "comfy-b") == "loading" and "does not answer" in b, str(b))

    if not wait_for("ComfyUI A", lambda: comfy_up(pa), START_WAIT, 1):
        check("ComfyUI A starts", False, open(os.path.join(run_a, "server.log")).read()[-2000:])
        return
    wait_for("comfy-a ready", lambda: backend_state(pc, "comfy-a") == "ready", 120)
    a = backends(pc)["comfy-a"]["capabilities"]
    check("A announces frameinterps from its RIFE VFI node", "frameinterps" in a["features"], str(a["features"]))
    check("A announces its node classes", "RIFE VFI" in a["nodes"] and "MusterSlowPassthrough" in a["nodes"]
          and len(a["nodes"]) > 300, f"{len(a.get('nodes', []))} classes")
    dev = (a.get("devices") or [{}])[0]
    check("A announces device telemetry from /system_stats",
          dev.get("type") == "cpu" and dev.get("vram_total", 0) > 0 and 0 < dev.get("vram_free", 0) <= dev["vram_total"],
          str(a.get("devices")))
    status = muster("status", "--coordinator", f"ws://127.0.0.1:{pc}")
    check("muster status shows the device", "cpu" in status.stdout and "comfy-a" in status.stdout, status.stdout)
    metrics = http("GET", f"http://127.0.0.1:{pc}/metrics")[1].decode()
    check("metrics export the device memory", 'muster_backend_vram_total_bytes{backend="comfy-a"' in metrics
          and "muster_backend_vram_free_bytes" in metrics, "no muster_backend_vram_* for comfy-a")

    # --- the warm-up gate for real, and cancel of a queued and a running prompt --------------------
    # A runs a long job; the gate keeps everything else from parking behind it while B loads.
    accepted_jobs(submit(pc, long_wf, 1))
    wait_for("the long job on A", lambda: len(comfy_queue(pa)[0]) == 1, 60)
    gated = submit(pc, core, 4)
    core_jobs = accepted_jobs(gated)
    time.sleep(1)
    states = [job(pc, j)["state"] for j in core_jobs]
    waiting = job(pc, core_jobs[0]).get("waiting", {})
    check("core.json jobs B could run are held while B is loading",
          states == ["gated"] * 4 and any(w["name"] == "comfy-b" for w in waiting.get("backends", [])),
          f"{states} {waiting}")
    run_b = start_comfyui("comfy-b", pb, "--disable-all-custom-nodes")
    if not wait_for("ComfyUI B", lambda: comfy_up(pb), START_WAIT, 1):
        check("ComfyUI B starts", False, open(os.path.join(run_b, "server.log")).read()[-2000:])
        return
    done = wait_for("the held core jobs", lambda: all(job(pc, j)["state"] == "completed" for j in core_jobs), 180)
    ran_on = [job(pc, j)["history"][-1]["backend"] for j in core_jobs] if done else []
    ids = {n: b["id"] for n, b in backends(pc).items()}
    check("the held jobs spread when B comes up", done is not None and ids["comfy-b"] in ran_on, f"ran on {ran_on}")
    released = [job(pc, j) for j in core_jobs]
    log(f"core jobs ran on {ran_on}")

    # The gate is open: a second long job waits in A's own queue behind the first.
    accepted_jobs(submit(pc, long_wf, 1))
    wait_for("a pending prompt on A", lambda: len(comfy_queue(pa)[1]) == 1, 60)
    running, pending = comfy_queue(pa)
    log(f"A's queue: running {running}, pending {pending}")
    queued_job = pending[0][1] if pending else None
    run_job = running[0][1] if running else None
    http("DELETE", f"http://127.0.0.1:{pc}/v1/jobs/{queued_job}")
    prompt_pending = pending[0][0] if pending else ""
    gone = wait_for("the pending prompt to leave A's queue",
                    lambda: all(p != prompt_pending for p, _ in comfy_queue(pa)[1]), 30)
    hist = get_json(f"{A}/history/{prompt_pending}")[1]
    ended = wait_for("the queued job canceled", lambda: job(pc, queued_job)["state"] == "canceled", 30)
    check("cancel of a queued prompt deletes it from ComfyUI's queue (no history)",
          gone is not None and hist == {} and ended is not None, f"history {hist}")
    wait_for("the long job to run", lambda: job(pc, run_job)["state"] == "running", 60)
    prompt_running = running[0][0] if running else ""
    http("DELETE", f"http://127.0.0.1:{pc}/v1/jobs/{run_job}")
    # At once, a job only A can run: it is bound to A (its overqueue slot) while the interrupted
    # prompt may still be running there, and must not be POSTed before ComfyUI confirmed.
    after = accepted_jobs(submit(pc, slow, 1))[0]
    h = wait_for("the interrupted prompt's history",
                 lambda: get_json(f"{A}/history/{prompt_running}")[1].get(prompt_running), 30)
    msgs = [m[0] for m in (h or {}).get("status", {}).get("messages", [])]
    ended = wait_for("the running job canceled", lambda: job(pc, run_job)["state"] == "canceled", 60)
    check("cancel of a running prompt interrupts it (ComfyUI's history says interrupted)",
          "execution_interrupted" in msgs and ended is not None, str(msgs))
    interrupted_ms = [m[1].get("timestamp", 0) for m in (h or {}).get("status", {}).get("messages", [])
                      if m[0] == "execution_interrupted"]
    done_after = wait_for("the job submitted after the cancel", lambda: job(pc, after)["state"] == "completed", 120)
    info = job(pc, after)
    posted_ms = (info.get("result") or {}).get("posted_ms", 0)
    check("after a cancel of a running prompt, no new prompt is POSTed to that ComfyUI before it confirmed",
          done_after is not None and info["history"][-1]["backend"] == ids["comfy-a"] and interrupted_ms
          and posted_ms >= interrupted_ms[0],
          f"posted at {posted_ms}, interrupt confirmed at {interrupted_ms}; {json.dumps(info.get('history'))}")
    metrics = http("GET", f"http://127.0.0.1:{pc}/metrics")[1].decode()
    check("both cancels were confirmed by the backend", 'muster_cancels_settled_total{how="confirmed"} 2' in metrics,
          [l for l in metrics.splitlines() if "cancels_settled" in l])

    bcap = backends(pc)["comfy-b"]["capabilities"]
    check("B (no custom nodes) does not announce frameinterps",
          "frameinterps" not in bcap["features"] and "MusterSlowPassthrough" not in bcap["nodes"], str(bcap["features"]))

    # --- routing by node class --------------------------------------------------------------------
    p = submit(pc, slow, 3, wait=True)
    ev = events(p)
    finals = [e for e in ev if e["state"] in ("completed", "failed", "canceled")]
    check("slow.json jobs (MusterSlowPassthrough) run only on A",
          p.returncode == 0 and len(finals) == 3 and all(e["backend"] == ids["comfy-a"] for e in finals),
          p.stdout[-1500:] + p.stderr[-500:])
    prog = [e for e in ev if e["event"] == "progress"]
    check("submit --wait shows ComfyUI's progress",
          any(0 < e.get("progress", 0) < 1 and "step" in e.get("message", "") for e in prog), str(prog[:3]))
    outputs = [o for e in finals if e["state"] == "completed" for o in e["result"]["outputs"]]
    files_ok = outputs and all(os.path.exists(os.path.join(run_a, "out", o["subfolder"], o["filename"]))
                               and o["filename"].endswith(".png") for o in outputs)
    view = http("GET", outputs[0]["url"])[1][:8] if outputs else b""
    check("results name PNG files that exist on that server", bool(files_ok) and view == b"\x89PNG\r\n\x1a\n",
          json.dumps(outputs[:2]))

    p = submit(pc, core, 12, wait=True)
    finals = [e for e in events(p) if e["state"] == "completed"]
    used = {e["backend"] for e in finals}
    spread = len(finals) == 12 and used == {ids["comfy-a"], ids["comfy-b"]}
    why = ""
    if not spread:
        # Why each job went where it did, and what the coordinator expected of each backend.
        bound = [(e.get("job"), e.get("backend"), e.get("expected_ms"), e.get("runner_up"), e.get("runner_up_expected_ms"))
                 for e in events(p) if e["event"] == "bound"]
        est = {n: (b.get("estimates"), b.get("load")) for n, b in backends(pc).items()}
        why = f"; bound (job, backend, expected_ms, runner_up, its ms): {bound}; backends: {json.dumps(est)[:3000]}"
    check("a batch of core.json jobs spreads over both", spread, f"{len(finals)} completed on {used}{why}")

    # --- failures ---------------------------------------------------------------------------------
    p = submit(pc, slow, 1, "--inputs-json", '{"2.fail_at_step": 2}', wait=True)
    f = [e for e in events(p) if e["state"] == "failed"]
    err = f[0]["error"] if f else {}
    check("a failing workflow (fail_at_step) fails with execution_error keeping ComfyUI's exception",
          p.returncode == 1 and err.get("code") == "execution_error" and "RuntimeError" in err.get("message", ""), str(err))
    p = submit(pc, core, 1, "--inputs-json", '{"3.upscale_method": "magic"}', wait=True)
    f = [e for e in events(p) if e["state"] == "failed"]
    err = f[0]["error"] if f else {}
    check("a bad input (HTTP 400) fails with bad_params naming node and error",
          err.get("code") == "bad_params" and "node 3 (ImageScale)" in err.get("message", ""),
          str(err) + " " + p.stdout[-1500:] + p.stderr[-1500:])
    bad = write_workflow("bad.json", {"1": {"class_type": "EmptyImage"}})
    p = submit(pc, bad, 1)
    check("a workflow that is not a graph of nodes is refused before anything is queued",
          p.returncode != 0 and "class_type" not in p.stdout and "inputs" in p.stderr, p.stdout + p.stderr)
    notjson = os.path.join(WORK, "notjson.json")
    with open(notjson, "w") as fh:
        fh.write("{not json")
    p = submit(pc, notjson, 1)
    check("a workflow that is not JSON is refused", p.returncode != 0 and "JSON" in p.stderr, p.stderr)
    unknown = write_workflow("unknown.json", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    p = submit(pc, unknown, 1, wait=True)
    f = [e for e in events(p) if e["state"] == "failed"]  # it fails at once: the snapshot says so
    det = f[0]["error"].get("details", {}) if f else {}
    check("a node class no backend has fails no_eligible_backend naming it per backend",
          f and f[0]["error"]["code"] == "no_eligible_backend" and det.get("missing_nodes") == ["NoSuchNode"]
          and all(r.get("missing_nodes") == ["NoSuchNode"] for r in det.get("refusals", [])), str(det))

    # --- a ComfyUI killed mid-job, then restarted ---------------------------------------------------
    before = backends(pc)["comfy-b"]["capabilities"]["incarnation"]
    heavy = write_workflow("heavy.json", {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 512, "height": 512, "batch_size": 2, "color": 255}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 31, "sigma": 10.0}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["2", 0], "blur_radius": 31, "sigma": 10.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "heavy"}}})
    # Keep A busy so the heavy job goes to B.
    busy = accepted_jobs(submit(pc, long_wf, 2))
    hj = accepted_jobs(submit(pc, heavy, 1))[0]
    on_b = wait_for("the heavy job running on B",
                    lambda: job(pc, hj)["state"] == "running" and job(pc, hj)["backend"] == ids["comfy-b"], 120)
    stop("comfy-b", signal.SIGKILL)
    for j in busy:
        http("DELETE", f"http://127.0.0.1:{pc}/v1/jobs/{j}")
    done = wait_for("the heavy job to complete elsewhere", lambda: job(pc, hj)["state"] == "completed", 300, 1)
    info = job(pc, hj)
    check("a ComfyUI killed mid-job: the job completes on the other",
          on_b is not None and done is not None and info["backend"] == ids["comfy-a"] and len(info["history"]) >= 2,
          json.dumps(info.get("history")))
    check("the killed ComfyUI's backend shows loading with the reason", backend_state(pc, "comfy-b") == "loading",
          str(backends(pc)["comfy-b"].get("capabilities")))
    start_comfyui("comfy-b", pb, "--disable-all-custom-nodes")
    wait_for("ComfyUI B again", lambda: comfy_up(pb), START_WAIT, 1)
    wait_for("comfy-b ready again", lambda: backend_state(pc, "comfy-b") == "ready", 120)
    after = backends(pc)["comfy-b"]["capabilities"]["incarnation"]
    check("a restarted ComfyUI is a new incarnation of its backend", after > before and backend_state(pc, "comfy-b") == "ready",
          f"{before} -> {after}")

    # --- /ws closed mid-prompt while the server stays up ---------------------------------------------
    ws_drop(pa)

    # --- the coordinator killed and restarted under its own ComfyUI backend -------------------------
    coordinator_restart(pa)
    coordinator_restart_unanswered(pa)

    # --- the coordinator-dialled kind -------------------------------------------------------------
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    G = f"http://127.0.0.1:{garbage.server_address[1]}"
    start_muster("coordinator-2", "serve", "--listen", f"127.0.0.1:{pd}", "--set", "gate.window_seconds=20", "--set",
                 "backends=" + json.dumps([{"name": "dialled-b", "kind": "comfyui", "url": B},
                                           {"name": "nowhere", "kind": "comfyui", "url": "http://127.0.0.1:1"},
                                           {"name": "garbage", "kind": "comfyui", "url": G}]))
    c2_started = time.time()
    wait_for("dialled-b ready", lambda: backend_state(pd, "dialled-b") == "ready", 120)
    d = backends(pd)
    check("a comfyui entry in backends is dialled by the coordinator",
          d["dialled-b"]["id"] < 0 and "SaveImage" in d["dialled-b"]["capabilities"].get("nodes", []), str(d["dialled-b"]))
    check("an unreachable comfyui entry shows loading with the reason, the daemon serves the rest",
          d["nowhere"]["capabilities"]["state"] == "loading" and "does not answer" in d["nowhere"]["capabilities"].get("message", ""),
          str(d["nowhere"]))
    msg = wait_for("the garbage backend's reason",
                   lambda: backends(pd)["garbage"]["capabilities"].get("message", "") or None, 30) or ""
    check("a server that answers garbage shows loading with the reason",
          backend_state(pd, "garbage") == "loading" and "object_info" in msg, msg)
    p = submit(pd, core, 2, wait=True)
    finals = [e for e in events(p) if e["state"] == "completed"]
    check("the coordinator-dialled ComfyUI runs jobs", len(finals) == 2 and all(e["backend"] == d["dialled-b"]["id"] for e in finals),
          p.stdout[-800:])

    # An idle ComfyUI that goes away for good: after 5 s its backend is a new incarnation, so the
    # warm-up gate waits for it again and a job only it can run is held, not failed at once. First
    # every first window of this coordinator's backends passes (20 s), "nowhere" and "garbage"
    # included, so only the new incarnation can hold the job.
    time.sleep(max(0.0, c2_started + 22 - time.time()))
    before = backends(pd)["dialled-b"]["capabilities"]["incarnation"]
    stop("comfy-b", signal.SIGKILL)
    renewed = wait_for("dialled-b a new incarnation", lambda: (backends(pd)["dialled-b"].get("capabilities") or {})
                       .get("incarnation", before) > before, 60)
    held = accepted_jobs(submit(pd, core, 1))[0]
    time.sleep(1)
    state = job(pd, held)["state"]
    check("an idle ComfyUI gone for 5 s makes its backend a new incarnation, and a job only it can run is held",
          renewed is not None and state == "gated", f"state {state}; {json.dumps(job(pd, held))[:600]}")
    start_comfyui("comfy-b", pb, "--disable-all-custom-nodes")
    # Whether it still runs depends on B starting within the 20 s window; only the hold is checked.
    wait_for("the held job to end", lambda: job(pd, held)["state"] in ("completed", "failed"), 60, 1)


class Proxy:
    """A TCP proxy in front of a ComfyUI that can close the WebSocket connections going through
    it (and refuse new ones for a while) while HTTP keeps working: a socket dropped by the network
    while the server stays up."""

    def __init__(self, target_port):
        self.target = target_port
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(64)
        self.port = self.srv.getsockname()[1]
        self.lock = threading.Lock()
        self.ws = []
        self.ws_opened = 0
        self.block_ws = False
        self.block_all = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        if self.block_all:  # the server is unreachable: every connection is closed at once
            c.close()
            return
        try:
            first = c.recv(65536)
            is_ws = first.startswith(b"GET /ws")
            if is_ws and self.block_ws:
                c.close()
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            u.sendall(first)
        except OSError:
            c.close()
            return
        if is_ws:
            with self.lock:
                self.ws.append((c, u))
                self.ws_opened += 1
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_ws(self):
        with self.lock:
            links, self.ws = self.ws, []
        for pair in links:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return len(links)


def prompts_of(url, job_id, before=()):
    """Prompt ids of the server's history and queue whose extra_data names this Muster job, leaving
    out `before` (job ids of other coordinators are the same numbers)."""
    hist = get_json(f"{url}/history")[1]
    q = get_json(f"{url}/queue")[1]
    entries = [e.get("prompt", []) for e in hist.values()] + q["queue_running"] + q["queue_pending"]
    return [e[1] for e in entries
            if len(e) > 3 and (e[3] or {}).get("muster_job") == job_id and e[1] not in before]


def prompt_number(url, job_id, before=()):
    """ComfyUI's number (its queue order) of the prompt of this Muster job, or None."""
    hist = get_json(f"{url}/history")[1]
    q = get_json(f"{url}/queue")[1]
    entries = [e.get("prompt", []) for e in hist.values()] + q["queue_running"] + q["queue_pending"]
    found = [e[0] for e in entries if len(e) > 3 and (e[3] or {}).get("muster_job") == job_id and e[1] not in before]
    return found[0] if len(found) == 1 else None


def running_on(url, job_id):
    """Whether ComfyUI at `url` is running a prompt of this Muster job now."""
    q = get_json(f"{url}/queue")[1]
    return any(len(e) > 3 and (e[3] or {}).get("muster_job") == job_id for e in q["queue_running"])


def ws_drop(pa):
    """A third coordinator dials ComfyUI A through the proxy; its /ws is closed while a prompt
    runs. Twice: reconnected at once (the prompt is followed on the new socket), and kept closed
    until the prompt has ended (it is read from /history). Each job completes on its first
    attempt, from one prompt."""
    A = f"http://127.0.0.1:{pa}"
    proxy = Proxy(pa)
    pe = free_port()
    start_muster("coordinator-3", "serve", "--listen", f"127.0.0.1:{pe}", "--set",
                 "backends=" + json.dumps([{"name": "proxied-a", "kind": "comfyui", "url": f"http://127.0.0.1:{proxy.port}"}]))
    if not wait_for("proxied-a ready", lambda: backend_state(pe, "proxied-a") == "ready", 120):
        check("a ComfyUI behind a proxy gets ready", False)
        return
    g = workflow("slow.json")
    g["2"]["inputs"].update({"steps": 16, "step_seconds": 0.25})
    wf = write_workflow("ws-drop.json", g)
    for blocked in (False, True):
        what = "kept closed until the prompt ended" if blocked else "reopened at once"
        before = set(get_json(f"{A}/history")[1])
        j = accepted_jobs(submit(pe, wf, 1))[0]
        # Running as ComfyUI sees it (its queue) or as Muster does: when the previous round's /ws
        # is still being reopened, ComfyUI's execution_start may never reach the coordinator, and a
        # 4 s prompt can end before Muster's state says running (seen once in CI).
        running = wait_for("the prompt running on A",
                           lambda: job(pe, j)["state"] == "running" or running_on(A, j), 60)
        opened = proxy.ws_opened
        proxy.block_ws = blocked
        dropped = proxy.drop_ws()
        if blocked:
            wait_for("the prompt to end on A while /ws is closed",
                     lambda: prompts_of(A, j, before)
                     and all(p in get_json(f"{A}/history/{p}")[1] for p in prompts_of(A, j, before)), 60)
            proxy.block_ws = False
        done = wait_for(f"the job after /ws was {what}", lambda: job(pe, j)["state"] in ("completed", "failed"), 120)
        info = job(pe, j)
        check(f"/ws closed mid-prompt and {what}: the job completes on its first attempt, from one prompt",
              running is not None and dropped >= 1 and done is not None and info["state"] == "completed"
              and len(info["history"]) == 1 and len(prompts_of(A, j, before)) == 1 and proxy.ws_opened > opened,
              f"dropped {dropped}, reopened {proxy.ws_opened - opened}; {json.dumps(info.get('history'))}; "
              f"prompts {prompts_of(A, j, before)}")
    stop("coordinator-3")


def serve_local_comfyui(proc, backend, url, steps, wf_name, settings=()):
    """Starts `muster serve` as `proc` with one local ComfyUI backend (kind comfyui) at `url` and
    writes a slow workflow of `steps` steps of 0.25 s. Returns (port, serve arguments, workflow
    path) once the backend is ready, or None."""
    port = free_port()
    args = ["serve", "--listen", f"127.0.0.1:{port}"]
    for setting in settings:
        args += ["--set", setting]
    args += ["--set", "backends=" + json.dumps([{"name": backend, "kind": "comfyui", "url": url}])]
    g = workflow("slow.json")
    g["2"]["inputs"].update({"steps": steps, "step_seconds": 0.25})
    wf = write_workflow(wf_name, g)
    start_muster(proc, *args)
    if not wait_for(f"{backend} ready", lambda: backend_state(port, backend) == "ready", 120):
        return None
    return port, args, wf


def coordinator_restart(pa):
    """A coordinator with a local ComfyUI backend (kind comfyui) on A and its default SQLite store
    is stopped, once with SIGKILL and once with SIGTERM, while one prompt runs on A and another
    waits in A's queue, and started again on the same store: it takes both prompts back instead of
    posting them again, so each job completes on its first attempt, from one prompt."""
    A = f"http://127.0.0.1:{pa}"
    started = serve_local_comfyui("coordinator-4", "local-a", A, steps=20, wf_name="restart.json")
    if started is None:
        check("a coordinator-dialled ComfyUI gets ready", False)
        return
    pf, args, wf = started
    for sig in (signal.SIGKILL, signal.SIGTERM):
        how = "killed (SIGKILL)" if sig == signal.SIGKILL else "stopped (SIGTERM)"
        before = set(get_json(f"{A}/history")[1])
        jobs = accepted_jobs(submit(pf, wf, 2))
        both = wait_for("one prompt running on A and one waiting",
                        lambda: running_on(A, jobs[0]) and any(len(prompts_of(A, j, before)) == 1 for j in jobs[1:]), 60)
        if sig == signal.SIGKILL:
            # Bound at the same moment, posted one after the other: ComfyUI numbers them in the
            # order they were bound, so they run in that order.
            numbers = [prompt_number(A, j, before) for j in jobs]
            check("jobs bound together reach ComfyUI in the order they were bound",
                  None not in numbers and numbers == sorted(numbers), f"prompt numbers {numbers} for jobs {jobs}")
        stop("coordinator-4", sig)
        start_muster("coordinator-4", *args)
        done = wait_for(f"both jobs after the coordinator was {how}",
                        lambda: all(job(pf, j).get("state") == "completed" for j in jobs), 180, 1)
        infos = [job(pf, j) for j in jobs]
        prompts = [prompts_of(A, j, before) for j in jobs]
        check(f"a coordinator {how} and started again takes its ComfyUI's prompts back: each job completes "
              "on its first attempt, from one prompt",
              both is not None and done is not None and all(len(i.get("history", [])) == 1 for i in infos)
              and all(len(p) == 1 for p in prompts),
              f"{[(i.get('job'), i.get('state'), i.get('history')) for i in infos]}; prompts {prompts}")
    stop("coordinator-4")


def coordinator_restart_unanswered(pa):
    """As `coordinator_restart`, but the ComfyUI does not answer when the coordinator comes back
    (a proxy closes every connection for 8 s): the prompts cannot be looked up, so the jobs run
    again, and once the server answers the first prompts are deleted (the running one
    interrupted): each job completes once, from one successful prompt."""
    A = f"http://127.0.0.1:{pa}"
    proxy = Proxy(pa)
    started = serve_local_comfyui("coordinator-5", "proxied-local", f"http://127.0.0.1:{proxy.port}", steps=80,
                                  wf_name="unanswered.json", settings=["gate.window_seconds=120"])
    if started is None:
        check("a ComfyUI behind a proxy gets ready", False)
        return
    pg, args, wf = started
    before = set(get_json(f"{A}/history")[1])
    jobs = accepted_jobs(submit(pg, wf, 2))
    running = wait_for("the first prompt running on A", lambda: running_on(A, jobs[0]), 60)
    stop("coordinator-5", signal.SIGKILL)
    proxy.block_all = True
    start_muster("coordinator-5", *args)
    time.sleep(8)
    proxy.block_all = False
    done = wait_for("both jobs after the unanswered restart",
                    lambda: all(job(pg, j).get("state") == "completed" for j in jobs), 240, 1)

    def successes(j):
        hist = get_json(f"{A}/history")[1]
        return [k for k, v in hist.items() if k not in before and len(v.get("prompt", [])) > 3
                and (v["prompt"][3] or {}).get("muster_job") == j and v.get("status", {}).get("status_str") == "success"]
    counts = [len(successes(j)) for j in jobs]
    check("a coordinator restarted while its ComfyUI does not answer: the jobs run again and their first "
          "prompts are deleted once it answers (each job completes once, from one successful prompt)",
          running is not None and done is not None and counts == [1, 1] and not comfy_queue(pa)[0] and not comfy_queue(pa)[1],
          f"successful prompts per job {counts}; {[(job(pg, j).get('state'), job(pg, j).get('history')) for j in jobs]}")
    stop("coordinator-5")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def bench(n):
    """n core.json jobs through Muster to two ComfyUIs, against the same prompts POSTed straight to
    the two servers split evenly (what a hand-written script does), in one run. Each job gets a
    distinct color so that ComfyUI's cache does not turn jobs into no-ops."""
    pa, pb, pc = free_port(), free_port(), free_port()
    A, B = f"http://127.0.0.1:{pa}", f"http://127.0.0.1:{pb}"
    start_comfyui("comfy-a", pa)
    start_comfyui("comfy-b", pb, "--disable-all-custom-nodes")
    start_muster("coordinator", "serve", "--listen", f"127.0.0.1:{pc}", "--set", "backends=[]", "--log-level", "warning")
    for key, url in (("agent-a", A), ("agent-b", B)):
        start_muster(key, "agent", "--coordinator", f"ws://127.0.0.1:{pc}", "--name", key, "--comfyui", url,
                     "--log-level", "warning")
    for port in (pa, pb):
        if not wait_for("ComfyUI", lambda: comfy_up(port), START_WAIT, 1):
            check("ComfyUI starts", False)
            return
    wait_for("both backends ready", lambda: all(backend_state(pc, k) == "ready" for k in ("agent-a", "agent-b")), 120)
    core = workflow("core.json")
    # Warm both servers up (first run loads code paths), outside the measurement.
    for url in (A, B):
        http("POST", f"{url}/prompt", {"prompt": core, "client_id": "warmup"})
    time.sleep(3)

    def graph(i, base):
        g = json.loads(json.dumps(core))
        g["1"]["inputs"]["color"] = base + i
        return g

    # Direct: POST all prompts, half to each server, then wait for every history entry.
    t0 = time.time()
    ids = []
    for i in range(n):
        url = A if i % 2 == 0 else B
        status, raw = http("POST", f"{url}/prompt", {"prompt": graph(i, 1000), "client_id": "bench-direct"})
        ids.append((url, json.loads(raw)["prompt_id"]))
    def all_done():
        return all(pid in get_json(f"{url}/history/{pid}")[1] for url, pid in ids)
    wait_for("the direct prompts", all_done, 1800, 0.05)
    direct = time.time() - t0

    # Muster: the same prompts (other colors) as one batch, followed to the end.
    inputs = json.dumps([{"1.color": 200000 + i} for i in range(n)])
    t0 = time.time()
    p = muster("submit", "--coordinator", f"ws://127.0.0.1:{pc}", "--workflow", os.path.join(PEER, "workflows", "core.json"),
               "--inputs-json", inputs, "--wait", "--json", timeout=1800)
    through = time.time() - t0
    finals = [e for e in events(p) if e["state"] == "completed"]
    # submit -> POST holds the wait for a free slot (late binding: at most slots + overqueue
    # prompts per server); bound -> POST is Muster's own path (assign, agent, POST).
    lat, own = [], []
    for e in finals:
        info = job(pc, e["job"])
        lat.append(e["result"]["posted_ms"] - info["created_ms"])
        own.append(e["result"]["posted_ms"] - info["history"][-1]["bound_ms"])
    on = {}
    for e in finals:
        on[e["backend"]] = on.get(e["backend"], 0) + 1
    ratio = through / direct
    print(f"bench comfyui: {n} core.json jobs on 2 ComfyUIs: direct {direct:.2f} s, through Muster {through:.2f} s "
          f"(x{ratio:.3f}; {len(finals)} completed, per backend {sorted(on.values())}); submit -> POST p50 "
          f"{pct(lat, 50)} ms, p99 {pct(lat, 99)} ms; bound -> POST p50 {pct(own, 50)} ms, p99 {pct(own, 99)} ms",
          flush=True)
    check("every job completed through Muster", len(finals) == n, p.stderr[-500:])


if __name__ == "__main__":
    try:
        if BENCH:
            bench(BENCH)
        else:
            main()
    except Exception as e:  # a crash of the driver is a failure, with what it was doing
        import traceback
        traceback.print_exc()
        FAILED.append(f"driver crashed: {e}")
    finally:
        for key in list(PROCS):
            stop(key)
        if FAILED:
            print(f"test-comfyui: {len(FAILED)} failed; logs in {WORK}")
            sys.exit(1)
        print("test-comfyui: all passed")
        shutil.rmtree(WORK, ignore_errors=True)
