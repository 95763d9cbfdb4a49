// The operator's status page: polls /status once a second and draws it. No library, no CDN.
"use strict";

const POLL_MS = 1000;
const KEEP = 300; // readings kept for the charts and trends (5 minutes at one a second)
const state = { token: sessionStorage.getItem("edge-agent-token"), prev: null, history: {}, trend: {}, selected: null };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

// Numbers for people: at most 6 significant digits, thousands grouped; text shortened.
function show(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (!isFinite(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e9 || a < 1e-4)) return v.toExponential(3);
    return Number(v.toPrecision(6)).toLocaleString("en-US", { maximumFractionDigits: 6 });
  }
  if (typeof v === "boolean") return v ? "true" : "false";
  if (Array.isArray(v)) return "[" + v.slice(0, 8).map(show).join(", ") + (v.length > 8 ? ", …" : "") + "]";
  const s = typeof v === "string" ? v : JSON.stringify(v);
  if (/^-?\d{16,}$/.test(s)) return s; // a 64-bit integer travels as text: shown whole
  return s.length > 60 ? s.slice(0, 57) + "…" : s;
}

function numeric(v) {
  if (typeof v === "number") return isFinite(v) ? v : null;
  if (typeof v === "boolean") return v ? 1 : 0;
  if (typeof v === "string" && /^-?\d+(\.\d+)?$/.test(v)) return Number(v);
  return null;
}

function age(s) {
  if (s === null || s === undefined) return "–";
  if (s < 0) s = 0;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

function when(iso) { return iso ? new Date(iso).toLocaleString() : "–"; }

async function poll() {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  let doc;
  try {
    const r = await fetch("/status", { headers, cache: "no-store" });
    if (r.status === 401) { $("login").hidden = false; $("updated").textContent = "login needed"; return; }
    if (!r.ok) throw new Error("HTTP " + r.status);
    doc = await r.json();
  } catch (e) {
    $("updated").textContent = "agent not answering (" + e.message + ")";
    $("updated").className = "bad";
    return;
  }
  $("login").hidden = true;
  draw(doc);
}

function draw(doc) {
  const now = Date.parse(doc.now);
  $("site").textContent = doc.site.name || doc.site.id;
  $("version").textContent = "edge-agent " + doc.version;
  $("started").textContent = when(doc.started);
  $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  $("updated").className = "muted";
  if (state.prev) {
    const dt = (now - state.prev.t) / 1000;
    if (dt > 0) {
      $("rate-in").textContent = show(Math.max(0, (doc.valuesIn - state.prev.valuesIn) / dt));
      $("rate-out").textContent = show(Math.max(0, (doc.recordsOut - state.prev.recordsOut) / dt));
    }
  }
  state.prev = { t: now, valuesIn: doc.valuesIn, recordsOut: doc.recordsOut };
  drawMachines(doc, now);
  drawSinks(doc, now);
  drawGaps(doc);
  drawProblems(doc);
  drawChart();
}

function remember(key, t, v) {
  const h = state.history[key] || (state.history[key] = []);
  if (!h.length || h[h.length - 1][0] !== t) h.push([t, v]);
  if (h.length > KEEP) h.shift();
}

function drawMachines(doc, now) {
  const box = $("machines");
  box.replaceChildren();
  for (const m of doc.machines) {
    const stateText = m.connected ? "connected" : "disconnected";
    const head = el("h3", {},
      el("span", {}, m.name ? m.name + " (" + m.id + ")" : m.id),
      el("span", { class: "badge " + stateText, "data-state": stateText }, stateText),
      el("span", { class: "muted" }, "since " + when(m.since) + (m.connected ? "" : " — " + (m.reason || ""))),
      el("span", { class: "muted" }, m.endpoint || ""),
      m.clock && m.clock.state !== "agrees"
        ? el("span", { class: "badge clock", "data-clock": m.clock.state },
          "source clock " + m.clock.state + " by " + age(Math.abs(m.clock.offsetS)))
        : "");
    const rows = m.elements.map((e) => {
      const key = m.id + "/" + e.path;
      if (e.time) remember(key, Date.parse(e.time), numeric(e.value));
      const bad = e.statusName && e.statusName !== "Good";
      const tr = el("tr", { class: "element" + (state.selected === key ? " selected" : ""), "data-path": e.path },
        el("td", {}, e.label ? e.label : e.path, e.label ? el("div", { class: "muted" }, e.path) : ""),
        el("td", { class: "num value" }, e.valueKnown ? show(e.value) : "–"),
        el("td", {}, e.unit || ""),
        el("td", { class: "num" }, age(e.ageS)),
        el("td", { class: bad ? "bad" : "" }, e.statusName || "–"),
        el("td", { class: e.problem ? (e.collected ? "warn" : "bad") : "" }, e.problem || ""));
      tr.onclick = () => { state.selected = key; $("chart-title").textContent = m.id + " " + (e.label || e.path); drawChart(); };
      return tr;
    });
    const table = el("table", {},
      el("thead", {}, el("tr", {}, ...["element", "value", "unit", "age", "status", "finding"].map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows));
    box.append(el("div", { class: "machine", "data-machine": m.id }, head, table));
  }
}

function drawSinks(doc, now) {
  const body = $("sinks").tBodies[0];
  body.replaceChildren();
  for (const s of doc.sinks) {
    const depth = Object.values(s.buffer).reduce((a, b) => a + b, 0);
    const t = state.trend[s.name] || (state.trend[s.name] = []);
    t.push(depth);
    if (t.length > KEEP) t.shift();
    const lanes = Object.entries(s.buffer).filter(([, n]) => n).map(([l, n]) => l + " " + show(n)).join(", ") || "empty";
    const spark = el("canvas", { class: "spark", width: 120, height: 24 });
    sparkline(spark, t);
    body.append(el("tr", { "data-sink": s.name },
      el("td", {}, s.name), el("td", { class: s.connected ? "" : "bad" }, s.connected ? "up" : "down"),
      el("td", {}, lanes), el("td", {}, spark), el("td", { class: "num" }, s.bufferBytes === null ? "unreadable" : show(s.bufferBytes / 1048576) + " MiB"),
      el("td", { class: "num" }, show(s.sent)), el("td", { class: "num" }, show(s.rejected + (s.quotaDropped || 0))),
      el("td", { class: s.lastError ? "bad" : "" }, s.lastError || "")));
  }
}

function drawGaps(doc) {
  const body = $("gaps").tBodies[0];
  body.replaceChildren(...doc.gaps.slice().reverse().map((g) => el("tr", {},
    el("td", {}, g.source), el("td", {}, when(g.start)), el("td", {}, g.end ? when(g.end) : "still open"),
    el("td", { class: "num" }, age(g.seconds)), el("td", {}, g.reason))));
  if (!doc.gaps.length) body.append(el("tr", {}, el("td", { colSpan: 5, class: "muted" }, "none")));
}

function drawProblems(doc) {
  const body = $("problems").tBodies[0];
  body.replaceChildren(...doc.problems.slice().reverse().map((p) => el("tr", {},
    el("td", {}, p.machine || ""), el("td", {}, p.path || ""), el("td", {}, p.node),
    el("td", { class: p.kind === "node-moved" ? "warn" : "bad" }, p.problem), el("td", {}, when(p.time)),
    el("td", {}, p.collected ? "collected" : "not collected"))));
  if (!doc.problems.length) body.append(el("tr", {}, el("td", { colSpan: 6, class: "muted" }, "none: every mapped node checked out")));
}

function sparkline(canvas, values) {
  const g = canvas.getContext("2d");
  const max = Math.max(1, ...values);
  g.strokeStyle = "#1f3a5f";
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, KEEP - 1)) * canvas.width;
    const y = canvas.height - 2 - (v / max) * (canvas.height - 4);
    if (i) g.lineTo(x, y); else g.moveTo(x, y);
  });
  g.stroke();
}

function drawChart() {
  const box = $("chart-box");
  if (!state.selected) { box.hidden = true; return; }
  box.hidden = false;
  const canvas = $("chart");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  const points = (state.history[state.selected] || []).filter(([, v]) => v !== null);
  g.fillStyle = "#6b7785";
  g.font = "12px system-ui";
  if (points.length < 2) { g.fillText("waiting for numeric values…", 10, 20); return; }
  const t0 = points[0][0], t1 = points[points.length - 1][0];
  let lo = Math.min(...points.map((p) => p[1])), hi = Math.max(...points.map((p) => p[1]));
  if (hi === lo) { hi += 1; lo -= 1; }
  const x = (t) => 50 + ((t - t0) / Math.max(1, t1 - t0)) * (canvas.width - 60);
  const y = (v) => canvas.height - 20 - ((v - lo) / (hi - lo)) * (canvas.height - 30);
  g.fillText(show(hi), 2, 14);
  g.fillText(show(lo), 2, canvas.height - 20);
  g.fillText(new Date(t0).toLocaleTimeString(), 50, canvas.height - 4);
  g.fillText(new Date(t1).toLocaleTimeString(), canvas.width - 70, canvas.height - 4);
  g.strokeStyle = "#1f6fb2";
  g.beginPath();
  points.forEach(([t, v], i) => (i ? g.lineTo(x(t), y(v)) : g.moveTo(x(t), y(v))));
  g.stroke();
}

$("chart-close").onclick = () => { state.selected = null; drawChart(); };
$("login").onsubmit = async (ev) => {
  ev.preventDefault();
  const r = await fetch("/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: $("user").value, password: $("password").value }) });
  if (!r.ok) { $("login-error").textContent = "wrong user name or password"; return; }
  state.token = (await r.json()).token;
  sessionStorage.setItem("edge-agent-token", state.token);
  $("password").value = "";
  $("login-error").textContent = "";
  poll();
};

poll();
setInterval(poll, POLL_MS);
