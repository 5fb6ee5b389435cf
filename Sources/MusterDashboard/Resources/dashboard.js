"use strict";
(() => {
  // What the coordinator knows (its configuration) arrives in the page as a JSON data block.
  const SETTINGS = (() => {
    try { return JSON.parse(document.getElementById("muster-settings")?.textContent || "{}"); } catch { return {}; }
  })();
  const HOT_FEATURES = new Set(SETTINGS.highlight_features || []);
  const FINAL = new Set(["completed", "failed", "canceled"]);
  const MAX_JOBS = 400;          // jobs kept in memory (final ones are dropped oldest first)
  const JOB_ROWS = 60;           // rows in "Recent jobs"
  const TIMELINE_MAX_MS = 15 * 60 * 1000;
  const TIMELINE_MIN_MS = 20 * 1000;

  const el = (id) => document.getElementById(id);
  const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

  const S = {
    ws: null, link: "connecting", welcome: null, report: null,
    jobs: new Map(), counts: { completed: 0, failed: 0, canceled: 0 }, batches: new Map(), fetching: 0,
    pending: new Map(), nextRequest: 1, statusInFlight: false,
    offset: null, retryMs: 500, retryTimer: null,
    token: sessionStorage.getItem("muster.token") || "", authRefused: false, refusal: "",
    // A standby's `not_leader` answer to hello (Protocol/README.md, error codes): the leader it
    // names, or null while none is known.
    standby: false, leader: null,
    // What the link's credential allows (welcome.role, Protocol/README.md 5.1); older
    // coordinators do not say, and allow everything.
    role: "all",
    armed: new Map(), renderQueued: false,
  };

  // ---- time ---------------------------------------------------------------------------
  // Job events carry the coordinator's clock; a small offset keeps "time left" honest
  // when the browser's clock differs. Events arrive after they happen, so the largest
  // (at_ms - now) seen is the best estimate.
  function noteServerTime(ms) {
    const d = ms - Date.now();
    if (S.offset === null || d > S.offset) S.offset = d;
  }
  const serverNow = () => Date.now() + (S.offset ?? 0);
  function ago(ms) {
    if (ms == null) return "never";
    const s = Math.max(0, Math.round((serverNow() - ms) / 1000));
    if (s < 2) return "just now";
    if (s < 120) return `${s} s ago`;
    if (s < 7200) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  }
  function span(ms) {
    if (ms == null) return "";
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
    const m = Math.floor(ms / 60000), s = Math.round((ms % 60000) / 1000);
    return `${m} min ${s} s`;
  }
  function clock(ms) {
    const d = new Date(ms - (S.offset ?? 0));
    return d.toTimeString().slice(0, 8);
  }

  // ---- link ---------------------------------------------------------------------------
  function setLink(state, text, tone) {
    S.link = state;
    document.body.dataset.link = state;
    const pill = el("link-pill");
    pill.textContent = text;
    pill.dataset.tone = tone;
  }

  function connect() {
    clearTimeout(S.retryTimer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/v1/ws`, "muster.client.v1");
    } catch (e) {
      retry();
      return;
    }
    S.ws = ws;
    S.authRefused = false;
    S.standby = false;
    setLink("connecting", "connecting", "warn");
    ws.onopen = () => {
      ws.send(JSON.stringify({
        type: "hello", id: "hello", role: "client", name: "dashboard",
        token: S.token || "none", versions: [1], software: "muster-dashboard",
      }));
    };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      received(msg);
    };
    ws.onclose = (ev) => {
      if (S.ws !== ws) return;
      S.ws = null;
      for (const p of S.pending.values()) p.reject({ code: "link_closed", message: "the link closed" });
      S.pending.clear();
      S.statusInFlight = false;
      if (ev.code === 4010 || S.standby) {
        // A standby coordinator (README "Running two coordinators"): say which one leads and
        // link to its dashboard; keep asking here too, since this one may take over.
        // What the page showed came from this coordinator while it led: no longer current.
        S.report = null;
        render();
        showStandby();
        S.retryMs = 2000;
        retry();
        return;
      }
      if (ev.code === 4001 || ev.code === 4007 || S.authRefused) {
        setLink("auth", "token required", "bad");
        askForToken(S.token !== "", ev.code === 4007 ? "This token belongs to a backend: it cannot open the dashboard." : "");
        return;
      }
      setLink("down", "disconnected, retrying", "bad");
      retry();
    };
  }

  function showStandby() {
    const leader = S.leader;
    setLink("standby", leader ? `standby · leader ${leader.name}` : "standby · no leader yet", "warn");
    const meta = el("coordinator");
    meta.textContent = `standby coordinator · ${location.host}`;
    const url = leader && dashboardURL(leader.address);
    if (url) {
      const a = document.createElement("a");
      a.id = "leader-link";
      a.href = url;
      a.textContent = `open the leader's dashboard (${leader.name})`;
      meta.append(" · ", a);
    }
  }

  // ws://HOST:PORT (or wss://) of a coordinator -> its dashboard's http(s)://HOST:PORT/.
  function dashboardURL(address) {
    const m = /^(wss?):\/\/([^/]+)/.exec(address || "");
    return m ? `${m[1] === "wss" ? "https" : "http"}://${m[2]}/` : null;
  }

  function retry() {
    // Section 6.5: start at 0.5 s, double up to 30 s, with ±20 % jitter.
    const delay = S.retryMs * (0.8 + Math.random() * 0.4);
    S.retryMs = Math.min(30000, S.retryMs * 2);
    S.retryTimer = setTimeout(connect, delay);
  }

  function request(body) {
    return new Promise((resolve, reject) => {
      if (!S.ws || S.link !== "live") { reject({ code: "not_connected", message: "not connected to the coordinator" }); return; }
      const id = `d${S.nextRequest++}`;
      S.pending.set(id, { resolve, reject });
      S.ws.send(JSON.stringify({ ...body, id }));
    });
  }

  function received(msg) {
    switch (msg.type) {
      case "welcome":
        S.welcome = msg;
        S.retryMs = 500;
        S.role = msg.role || "all";
        setLink("live", "live", "good");
        el("coordinator").textContent = `coordinator ${msg.coordinator} · ${location.host}`
          + (S.role === "all" ? "" : ` · ${S.role}${msg.owner ? ` ${msg.owner}` : ""}`);
        applyRole();
        // The subscription resends the state of every job not yet ended and of the MAX_JOBS
        // that ended last, and counts the other ended ones (`omitted`): start counting afresh
        // from those, and fetch again the batches that could not be fetched before.
        S.counts = { completed: 0, failed: 0, canceled: 0 };
        for (const [batch, status] of S.batches) if (status !== "done") S.batches.delete(batch);
        request({ type: "subscribe", finished_snapshots: MAX_JOBS }).then((r) => {
          for (const k of Object.keys(S.counts)) S.counts[k] += (r.omitted && r.omitted[k]) || 0;
          scheduleRender();
        }, (e) => toast(`subscribe failed: ${e.message}`, true));
        pollStatus();
        return;
      case "job":
        applyJob(msg);
        return;
      case "goodbye":
        setLink("down", `coordinator said goodbye (${msg.reason})`, "bad");
        return;
      case "error":
        if (msg.code === "bad_credentials" || (msg.code === "forbidden" && msg.id === "hello")) S.authRefused = true;
        if (msg.code === "not_leader") {
          S.standby = true;
          S.leader = (msg.details && msg.details.leader) || null;
          return;
        }
        if (msg.id && S.pending.has(msg.id)) {
          S.pending.get(msg.id).reject(msg);
          S.pending.delete(msg.id);
        } else if (msg.code !== "bad_credentials") {
          toast(`${msg.code}: ${msg.message}`, true);
        }
        return;
      default:
        if (msg.id && S.pending.has(msg.id)) {
          S.pending.get(msg.id).resolve(msg);
          S.pending.delete(msg.id);
        }
    }
  }

  // Backends, gate and queue come from a status report every second over the same link.
  function pollStatus() {
    if (S.link !== "live" || S.statusInFlight) return;
    S.statusInFlight = true;
    request({ type: "status" }).then((r) => {
      S.statusInFlight = false;
      S.report = r;
      document.body.dataset.status = "received";
      render();
    }, () => { S.statusInFlight = false; });
  }

  // ---- jobs ---------------------------------------------------------------------------
  function job(id, batch) {
    let j = S.jobs.get(id);
    if (!j) {
      j = { id, batch, state: "queued", attempt: 0, backend: null, startedMs: null, endedMs: null, boundMs: null,
            seenMs: serverNow(), lost: [] };
      S.jobs.set(id, j);
    }
    return j;
  }

  function applyJob(e) {
    noteServerTime(e.at_ms);
    const j = job(e.job, e.batch);
    j.state = e.state;
    j.attempt = e.attempt;
    if (e.backend != null) j.backend = e.backend;
    switch (e.event) {
      case "bound": j.boundMs = e.at_ms; j.startedMs = null; j.progress = null; break;
      case "started": j.startedMs = e.at_ms; break;
      case "progress": j.progress = e.progress; break;
      case "requeued":
      case "revoked":
        if (j.backend != null) j.lost.push({ backend: e.backend ?? j.backend, start: j.startedMs ?? j.boundMs ?? e.at_ms, end: e.at_ms });
        j.backend = null; j.startedMs = null; j.boundMs = null; j.progress = null;
        break;
      case "completed": case "failed": case "canceled":
        j.endedMs = e.at_ms;
        j.progress = null;
        if (e.error) j.error = e.error;
        break;
      case "snapshot":
        if (e.error) j.error = e.error;
        if (e.progress != null) j.progress = e.progress;
        break;
    }
    // A job ends once, and a subscription reports an ended job once (as its snapshot) or
    // counts it in `omitted`, so counting these needs no bookkeeping per job.
    if (FINAL.has(e.state) && (e.event === "snapshot" || e.event === e.state)) S.counts[e.state] += 1;
    wantBatch(e.batch);
    prune();
    scheduleRender();
  }

  // What events do not say (kind, owner, priority, and start times of jobs that finished
  // before the page opened) comes from GET /v1/batches/{id}: once per batch, four at a
  // time, only for batches that still have a job on the page, again after a failure.
  function wantBatch(batch) {
    if (S.batches.has(batch)) return;
    S.batches.set(batch, "wanted");
    pumpBatches();
  }
  function pumpBatches() {
    for (const [batch, status] of S.batches) {
      if (S.fetching >= 4) return;
      if (status !== "wanted") continue;
      if ([...S.jobs.values()].some((j) => j.batch === batch)) fetchBatch(batch);
      else S.batches.set(batch, "skipped");
    }
  }
  function fetchBatch(batch) {
    S.batches.set(batch, "fetching");
    S.fetching += 1;
    const headers = S.token ? { Authorization: `Bearer ${S.token}` } : {};
    fetch(`/v1/batches/${batch}`, { headers, cache: "no-store" })
      .then((r) => {
        if (r.status === 404) return null;  // forgotten already
        if (r.status === 401) return "unauthorized";  // tried again after the next welcome
        if (!r.ok) throw new Error(`HTTP ${r.status}`);
        return r.json();
      })
      .then((info) => {
        S.batches.set(batch, info === "unauthorized" ? info : "done");
        if (info && info !== "unauthorized") applyBatch(info);
      })
      .catch(() => {
        S.batches.set(batch, "retry");
        setTimeout(() => { S.batches.set(batch, "wanted"); pumpBatches(); }, 2000);
      })
      .finally(() => { S.fetching -= 1; pumpBatches(); });
  }
  function applyBatch(info) {
    for (const ji of info.jobs || []) {
      const j = S.jobs.get(ji.job);
      if (!j) continue;
      j.kind = ji.kind; j.needs = ji.needs || []; j.model = ji.model; j.priority = ji.priority; j.owner = ji.owner;
      j.createdMs = ji.created_ms;
      if (j.startedMs == null && ji.started_ms != null && (j.state === "running" || FINAL.has(j.state))) j.startedMs = ji.started_ms;
      if (j.endedMs == null && ji.finished_ms != null && FINAL.has(j.state)) j.endedMs = ji.finished_ms;
      if (j.lost.length === 0) {
        for (const a of (ji.history || []).slice(0, -1)) {
          if (a.ended_ms != null) j.lost.push({ backend: a.backend, start: a.bound_ms, end: a.ended_ms });
        }
      }
    }
    scheduleRender();
  }

  // Once a quarter over the bound (not at every event: it sorts), back to it.
  function prune() {
    if (S.jobs.size <= MAX_JOBS + MAX_JOBS / 4) return;
    const finished = [...S.jobs.values()].filter((j) => FINAL.has(j.state)).sort((a, b) => (a.endedMs ?? 0) - (b.endedMs ?? 0));
    for (const j of finished.slice(0, S.jobs.size - MAX_JOBS)) S.jobs.delete(j.id);
  }

  // ---- rendering ----------------------------------------------------------------------
  // The Content-Security-Policy forbids style attributes, so positions and widths travel
  // as data-css and are applied through the CSSOM, which the policy allows.
  function fill(id, html) {
    const root = el(id);
    root.innerHTML = html;
    for (const e of root.querySelectorAll("[data-css]")) e.style.cssText = e.dataset.css;
  }

  function scheduleRender() {
    if (S.renderQueued) return;
    S.renderQueued = true;
    setTimeout(() => { S.renderQueued = false; render(); }, 100);
  }

  function sortedBackends() {
    const list = S.report ? [...S.report.backends] : [];
    // Local pseudo-backends first (-1, -2, ...), then remote ones by id.
    return list.sort((a, b) => (a.id < 0) !== (b.id < 0) ? (a.id < 0 ? -1 : 1) : Math.abs(a.id) - Math.abs(b.id));
  }
  function backendName(id) {
    const b = S.report?.backends.find((x) => x.id === id);
    return b ? b.name : `backend ${id}`;
  }

  function render() {
    renderHeader();
    renderBackends();
    renderGate();
    renderQueue();
    renderTimeline();
    renderJobs();
  }

  function renderHeader() {
    const counts = S.counts;
    el("count-completed").textContent = counts.completed;
    el("count-failed").textContent = counts.failed;
    el("count-failed").parentElement.classList.toggle("bad", counts.failed > 0);
    el("count-canceled").textContent = counts.canceled;
    const r = S.report;
    if (!r) {
      for (const id of ["count-ready", "count-running", "count-queued", "count-gated"]) el(id).textContent = "–";
      const pill = el("ready-pill");
      pill.textContent = "readiness unknown";
      pill.dataset.tone = "muted";
      return;
    }
    el("count-ready").textContent = `${r.readiness.ready_backends} / ${r.backends.length}`;
    el("count-running").textContent = r.queue.running;
    el("count-queued").textContent = r.queue.queued + r.queue.bound;
    el("count-gated").textContent = r.queue.gated;
    const pill = el("ready-pill");
    if (r.readiness.ready) {
      pill.textContent = "ready"; pill.dataset.tone = "good";
    } else {
      pill.textContent = `not ready: ${(r.readiness.reasons || []).join(", ").replaceAll("_", " ") || "unknown"}`;
      pill.dataset.tone = "warn";
    }
  }

  function featureTags(features) {
    return (features || []).map((f) => `<span class="tag${HOT_FEATURES.has(f) ? " hot" : ""}">${esc(f)}</span>`).join("");
  }

  // ComfyUI backends report their devices, node classes and why they are not ready.
  function backendNotes(c) {
    const gib = (n) => (n / 1073741824).toFixed(1);
    const devices = (c?.devices || []).map((d) => `<div class="sub">${esc(d.name)}: ${gib(d.vram_free)} of ${gib(d.vram_total)} GiB free</div>`).join("");
    const nodes = c?.nodes?.length ? `<div class="sub">${c.nodes.length} node classes</div>` : "";
    return devices + nodes + (c?.message ? `<div class="sub">${esc(c.message)}</div>` : "");
  }

  // What routing expects of a backend: its speed (and where it comes from), its model load
  // time, and the expected seconds of each job class there (a prior until measured).
  function estimateNotes(e) {
    if (!e) return "";
    const secs = (x) => (x >= 10 ? x.toFixed(0) : x.toFixed(1)) + " s";
    const speed = `speed ${e.speed}× <span class="sub">(${esc(e.speed_source)})</span>`;
    const load = e.model_load_seconds != null ? ` · load ${secs(e.model_load_seconds)}` : "";
    // A workflow's class is also its node classes: their count here, the list on hover.
    const nodes = (j) => (j.nodes && j.nodes.length ? ` <span title="${esc(j.nodes.join(", "))}">[${j.nodes.length} nodes]</span>` : "");
    const jobs = (e.jobs || []).map((j) => `${esc(j.kind)}${j.model ? "/" + esc(j.model) : ""}${nodes(j)} ${secs(j.seconds)}${j.measured ? "" : "*"}`).join(" · ");
    return `<div class="sub estimates" title="expected seconds per job class here; * not measured yet (a prior)">${speed}${load}${jobs ? " · " + jobs : ""}</div>`;
  }

  function renderBackends() {
    const rows = sortedBackends().map((b) => {
      const c = b.capabilities;
      const state = c ? c.state : null;
      const loaded = new Set(c?.models?.loaded || []);
      const models = (c?.models?.available || []).map((m) => `<span class="tag${loaded.has(m) ? " loaded" : ""}" title="${loaded.has(m) ? "loaded" : "available"}">${esc(m)}</span>`).join("")
        || '<span class="sub">none</span>';
      const cap = Math.max(1, b.load.capacity);
      const bound = Math.min(100, (b.load.in_flight / cap) * 100), running = Math.min(100, (b.load.running / cap) * 100);
      const draining = state === "draining";
      const armed = (S.armed.get(`drain:${b.id}`) ?? 0) > Date.now();
      const canDrain = !draining && b.link !== "down";
      return `<tr data-backend-id="${b.id}" data-state="${esc(state ?? "none")}">
        <td class="id">${b.id}</td>
        <td><span class="name">${esc(b.name)}</span> <span class="tag ${b.local ? "local" : "remote"}">${b.local ? "local" : "remote"}</span>${backendNotes(c)}${estimateNotes(b.estimates)}</td>
        <td><span class="dot ${esc(b.link)}"></span>${esc(b.link)}</td>
        <td><span class="state ${esc(state ?? "none")}">${esc(state ?? "not announced")}</span>${b.inhibited_until_ms && b.inhibited_until_ms > serverNow() ? ' <span class="sub">inhibited</span>' : ""}</td>
        <td>${featureTags(c?.features) || '<span class="sub">–</span>'}</td>
        <td>${models}</td>
        <td><span class="bar" title="${b.load.running} running, ${b.load.in_flight} bound of ${b.load.capacity}"><span class="bound" data-css="width:${bound}%"></span><span class="running" data-css="width:${running}%"></span></span><span class="bar-label">${b.load.in_flight} / ${b.load.capacity}</span></td>
        <td class="num mono">${c ? `${c.revision}` : "–"}</td>
        <td title="${b.last_seen_ms ? clock(b.last_seen_ms) : ""}">${esc(ago(b.last_seen_ms))}</td>
        <td class="num">${canOperate() ? `<button class="danger${armed ? " armed" : ""}" data-action="drain" data-backend="${b.id}" ${canDrain ? "" : "disabled"}>${draining ? "draining" : armed ? "confirm drain" : "Drain"}</button>` : ""}</td>
      </tr>`;
    });
    fill("backend-rows", rows.join("") || '<tr><td colspan="10" class="empty">no backend has registered</td></tr>');
    updateLoadForm();
  }

  // The load form is not re-rendered (that would reset what the operator picked); its
  // options change only when the set of models or backends does.
  function updateLoadForm() {
    const models = new Set();
    for (const b of S.report?.backends || []) for (const m of b.capabilities?.models?.available || []) models.add(m);
    setOptions(el("load-model"), [["", "model…"], ...[...models].sort().map((m) => [m, m])]);
    setOptions(el("load-backend"), [["", "every eligible backend"], ...sortedBackends().map((b) => [String(b.id), `${b.name} (${b.id})`])]);
  }
  function setOptions(select, options) {
    const key = JSON.stringify(options);
    if (select.dataset.key === key) return;
    const value = select.value;
    select.innerHTML = options.map(([v, t]) => `<option value="${esc(v)}">${esc(t)}</option>`).join("");
    select.dataset.key = key;
    if (options.some(([v]) => v === value)) select.value = value;
  }

  function renderGate() {
    const r = S.report;
    if (!r) return;
    const pill = el("gate-pill");
    const held = r.readiness.held_jobs;
    if (held === 0) {
      pill.textContent = "open"; pill.dataset.tone = "good";
      fill("gate-body", '<div class="gate-open" data-held="0">No job is held. <span class="sub">Capability-bound jobs wait here until the backends that might run them have announced.</span></div>');
      return;
    }
    pill.textContent = `holding ${held} job${held === 1 ? "" : "s"}`; pill.dataset.tone = "warn";
    const now = serverNow();
    fill("gate-body", (r.readiness.waiting || []).map((w) => {
      const who = (w.backends || []).map((b) => `<span class="who"><b>${esc(b.name)}</b><span class="sub">${esc(String(b.reason).replaceAll("_", " "))}</span></span>`).join("")
        || '<span class="sub">no backend named</span>';
      let countdown = "";
      if (w.until_ms != null) {
        const left = Math.max(0, w.until_ms - now);
        const window = S.gateWindow(w);
        const pct = window > 0 ? Math.min(100, (left / window) * 100) : 0;
        countdown = `<div class="countdown"><span>${left > 0 ? `${span(left)} left in the window` : "window elapsed"}</span><div class="track"><div data-css="width:${pct}%"></div></div></div>`;
      }
      return `<div class="wait" data-held="${w.jobs ?? 0}">
        <div class="wait-head"><span class="held">${w.jobs ?? "?"}</span> held, needing ${featureTags(w.features) || '<span class="sub">no features</span>'}${w.model ? ` <span class="tag loaded">${esc(w.model)}</span>` : ""}</div>
        <div class="wait-backends"><span class="sub">waiting for</span> ${who}</div>
        ${countdown}
      </div>`;
    }).join(""));
  }
  // The gate window's length comes from the coordinator's settings; without them (an older
  // coordinator), the longest time left seen for a wait stands in for it.
  const windows = new Map();
  S.gateWindow = (w) => {
    if (SETTINGS.gate_window_ms > 0) return SETTINGS.gate_window_ms;
    const key = JSON.stringify([w.features, w.until_ms]);
    const left = Math.max(0, w.until_ms - serverNow());
    const seen = Math.max(windows.get(key) ?? 0, left);
    windows.set(key, seen);
    return seen;
  };

  function renderQueue() {
    const r = S.report;
    if (!r) return;
    const q = r.queue;
    el("queue-total").textContent = `${q.queued + q.gated + q.bound + q.running} not final`;
    const groups = new Map();
    for (const j of S.jobs.values()) {
      if (!["queued", "gated", "bound", "running"].includes(j.state)) continue;
      const key = `${j.priority ?? 0}\u0001${j.owner ?? "…"}`;
      const g = groups.get(key) || { priority: j.priority ?? 0, owner: j.owner ?? "…", queued: 0, gated: 0, bound: 0, running: 0 };
      g[j.state] += 1;
      groups.set(key, g);
    }
    const rows = [...groups.values()].sort((a, b) => b.priority - a.priority || a.owner.localeCompare(b.owner)).map((g) =>
      `<tr data-priority="${g.priority}" data-owner="${esc(g.owner)}"><td class="num">${g.priority}</td><td>${esc(g.owner)}</td><td class="num">${g.queued}</td><td class="num">${g.gated}</td><td class="num">${g.bound}</td><td class="num">${g.running}</td></tr>`);
    const byPriority = (q.by_priority || []).map((p) => `priority ${p.priority}: <b>${p.jobs}</b>`).join(" · ");
    fill("queue-body", `<div class="qtotals"><span>queued <b>${q.queued}</b></span><span>gated <b>${q.gated}</b></span><span>bound <b>${q.bound}</b></span><span>running <b>${q.running}</b></span>${byPriority ? `<span>${byPriority}</span>` : ""}</div>`
      + (rows.length
        ? `<table class="qtable"><thead><tr><th class="num">Priority</th><th>Owner</th><th class="num">Queued</th><th class="num">Gated</th><th class="num">Bound</th><th class="num">Running</th></tr></thead><tbody>${rows.join("")}</tbody></table>`
        : '<p class="empty">Nothing waits: every job is running or done.</p>'));
  }

  function renderTimeline() {
    const now = serverNow();
    const bars = [];
    for (const j of S.jobs.values()) {
      for (const l of j.lost) bars.push({ job: j, backend: l.backend, start: l.start, end: l.end, cls: "lost" });
      if (j.startedMs != null && j.backend != null) {
        const cls = j.state === "running" || j.state === "bound" ? "running" : j.state;
        bars.push({ job: j, backend: j.backend, start: j.startedMs, end: j.endedMs ?? now, cls });
      }
    }
    if (bars.length === 0) { fill("gantt", '<p class="empty">no job has started yet</p>'); return; }
    const end = now;
    let start = Math.min(...bars.map((b) => b.start));
    start = Math.max(start, end - TIMELINE_MAX_MS);
    if (end - start < TIMELINE_MIN_MS) start = end - TIMELINE_MIN_MS;
    const width = end - start;
    const pct = (t) => ((Math.max(t, start) - start) / width) * 100;
    const step = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600].map((s) => s * 1000).find((s) => width / s <= 8) ?? 900000;
    let ticks = "";
    for (let t = Math.ceil(start / step) * step; t <= end; t += step) ticks += `<span class="g-tick" data-css="left:${pct(t)}%">${clock(t)}</span>`;

    const ids = sortedBackends().map((b) => b.id);
    for (const b of bars) if (!ids.includes(b.backend)) ids.push(b.backend);
    const rows = ids.map((id) => {
      const mine = bars.filter((b) => b.backend === id && b.end >= start).sort((a, b) => a.start - b.start);
      // Jobs that overlap on one backend (several slots) go to separate lanes.
      const lanes = [];
      for (const b of mine) {
        let lane = lanes.findIndex((endAt) => endAt <= b.start);
        if (lane < 0) { lane = lanes.length; lanes.push(0); }
        lanes[lane] = b.end;
        b.lane = lane;
      }
      const height = Math.max(1, lanes.length) * 19 + 5;
      const html = mine.map((b) => {
        const left = pct(b.start), w = Math.max(0.3, pct(b.end) - left);
        const title = `job ${b.job.id}${b.job.kind ? ` · ${b.job.kind}` : ""} · ${b.cls} · ${span(b.end - b.start)} · started ${clock(b.start)}`;
        return `<div class="g-bar ${b.cls}" data-job="${b.job.id}" data-state="${b.cls}" title="${esc(title)}" data-css="left:${left}%;width:${w}%;top:${3 + b.lane * 19}px">${b.job.id}</div>`;
      }).join("");
      return `<div class="g-row" data-backend-id="${id}"><div class="g-label"><span class="mono">${id}</span>${esc(backendName(id))}</div><div class="g-track" data-css="height:${height}px;background-size:${(step / width) * 100}% 100%">${html}<div class="g-now" data-css="left:100%"></div></div></div>`;
    });
    fill("gantt", `<div class="g-axis"><div></div><div class="g-track">${ticks}</div></div>${rows.join("")}`);
  }

  function renderJobs() {
    const order = { running: 0, bound: 1, gated: 2, queued: 3 };
    const list = [...S.jobs.values()].sort((a, b) => {
      const oa = order[a.state] ?? 9, ob = order[b.state] ?? 9;
      if (oa !== ob) return oa - ob;
      return (b.endedMs ?? b.seenMs) - (a.endedMs ?? a.seenMs) || b.id - a.id;
    });
    el("jobs-total").textContent = `${S.jobs.size} shown of the jobs this coordinator still knows`;
    const now = serverNow();
    const rows = list.slice(0, JOB_ROWS).map((j) => {
      const final = FINAL.has(j.state);
      const duration = j.startedMs != null ? span((j.endedMs ?? now) - j.startedMs) : "";
      const progress = j.state === "running" && j.progress != null ? `<span class="progress"><div data-css="width:${Math.round(j.progress * 100)}%"></div></span>` : "";
      const error = j.error ? `<div class="err">${esc(j.error.code)}: ${esc(j.error.message)}</div>` : "";
      return `<tr data-job-id="${j.id}" data-state="${esc(j.state)}">
        <td class="id">${j.id}</td><td class="id">${j.batch}</td>
        <td>${esc(j.kind ?? "")} ${(j.needs || []).filter((f) => HOT_FEATURES.has(f)).length ? '<span class="tag hot">video</span>' : ""}</td>
        <td>${esc(j.owner ?? "")}</td><td class="num">${j.priority ?? ""}</td>
        <td><span class="jstate ${esc(j.state)}">${esc(j.state)}</span>${progress}${error}</td>
        <td>${j.backend != null ? `<span class="mono sub">${j.backend}</span> ${esc(backendName(j.backend))}` : '<span class="sub">–</span>'}</td>
        <td class="num">${j.attempt}</td><td class="num">${duration}</td>
        <td class="num">${final || !canCancel() ? "" : `<button data-action="cancel" data-job="${j.id}">Cancel</button>`}</td>
      </tr>`;
    });
    fill("job-rows", rows.join("") || '<tr><td colspan="10" class="empty">no jobs yet</td></tr>');
  }

  // ---- actions ------------------------------------------------------------------------
  function toast(text, bad = false) {
    const t = document.createElement("div");
    t.className = `toast${bad ? " bad" : ""}`;
    t.textContent = text;
    el("toasts").appendChild(t);
    setTimeout(() => t.remove(), bad ? 8000 : 4000);
  }

  document.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    if (button.dataset.action === "drain") {
      const id = Number(button.dataset.backend);
      const key = `drain:${id}`;
      // Two clicks: the first arms the button for 4 s, the second drains.
      if ((S.armed.get(key) ?? 0) <= Date.now()) {
        S.armed.set(key, Date.now() + 4000);
        renderBackends();
        setTimeout(renderBackends, 4100);
        return;
      }
      S.armed.delete(key);
      request({ type: "drain", backend: id })
        .then(() => { toast(`${backendName(id)} is draining: it finishes its jobs and takes no new ones`); pollStatus(); })
        .catch((e) => toast(`drain failed: ${e.message}`, true));
    } else if (button.dataset.action === "cancel") {
      const id = Number(button.dataset.job);
      button.disabled = true;
      request({ type: "cancel", job: id })
        .then((r) => toast(r.jobs.length ? `job ${id} canceled` : `job ${id} had already ended`))
        .catch((e) => { button.disabled = false; toast(`cancel failed: ${e.message}`, true); });
    }
  });

  el("load-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const model = el("load-model").value;
    if (!model) return;
    const backend = el("load-backend").value;
    const body = { type: "load_model", model };
    if (backend !== "") body.backend = Number(backend);
    request(body)
      .then((r) => toast(r.backends.length ? `loading ${model} on ${r.backends.map(backendName).join(", ")}` : `no eligible backend needs to load ${model} now`))
      .catch((e) => toast(`load failed: ${e.message}`, true));
  });

  // ---- token --------------------------------------------------------------------------
  // Drain and load models: an operator (or the shared token). Cancel: also a client, whose
  // view holds its own jobs only. A read credential only looks.
  function canOperate() { return S.role === "all" || S.role === "operator"; }
  function canCancel() { return canOperate() || S.role === "client"; }
  function applyRole() {
    el("load-form").hidden = !canOperate();
    document.body.dataset.role = S.role;
  }

  function askForToken(wasRefused, why) {
    if (wasRefused) sessionStorage.removeItem("muster.token");
    el("auth").hidden = false;
    el("token-error").hidden = !wasRefused;
    el("token-error").textContent = why || "The token was not accepted.";
    el("token-input").focus();
  }
  el("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    S.token = el("token-input").value.trim();
    el("token-input").value = "";
    if (el("token-remember").checked) sessionStorage.setItem("muster.token", S.token);
    else sessionStorage.removeItem("muster.token");
    el("auth").hidden = true;
    S.retryMs = 500;
    connect();
  });

  setInterval(() => { pollStatus(); if (S.report) render(); }, 1000);
  connect();
})();
