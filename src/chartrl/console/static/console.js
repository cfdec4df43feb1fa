// The chartrl console: reads the JSON API with the bearer token kept in sessionStorage (this
// tab only, never in a URL), draws with the locally served plotly.js, refreshes in place.
"use strict";

const REFRESH_MS = 15000;
const KEY = "chartrl.token";
const $ = (id) => document.getElementById(id);
const PLOT_CONFIG = { responsive: true, displaylogo: false };
const plotlyReady = new Promise((resolve) => {
  if (window.Plotly) resolve(); else $("plotly-js").addEventListener("load", resolve);
}).then(() => performance.mark("chartrl:plotly"));
let timer = null;
let chartUrl = null;

function token() { return sessionStorage.getItem(KEY); }

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { showLogin("the token was refused; paste it again"); throw new Error("unauthorised"); }
  if (!response.ok) {
    let text = response.statusText;
    try { text = (await response.json()).error || text; } catch (e) { /* not JSON */ }
    const err = new Error(text); err.status = response.status; throw err;
  }
  return response;
}
const json = async (path, options) => (await api(path, options)).json();

function showLogin(message) {
  clearInterval(timer); timer = null;
  $("main").hidden = true; $("logout").hidden = true; $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("summary").textContent = "not logged in";
}

function showMain() {
  $("login").hidden = true; $("main").hidden = false; $("logout").hidden = false;
  refresh();
  if (!timer) timer = setInterval(refresh, REFRESH_MS);
}

const money = (x) => x == null ? "-" : x.toLocaleString(undefined, { maximumFractionDigits: 2, minimumFractionDigits: 2 });
const pct = (x) => x == null ? "-" : (x * 100).toFixed(2) + " %";
const num = (x, d = 3) => x == null || typeof x !== "number" ? (x == null ? "-" : String(x)) : x.toFixed(d);
const when = (t) => t ? t.replace("T", " ").replace("+00:00", "Z") : "-";

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) { if (k === "class") e.className = v; else e.setAttribute(k, v); }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "-" : String(c)));
  return e;
}

function table(columns, rows) {
  const head = el("tr", {}, ...columns.map(([label]) => el("th", {}, label)));
  const body = rows.map((r) => el("tr", {}, ...columns.map(([, f, cls]) => el("td", cls ? { class: cls(r) } : {}, f(r)))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

function summary(st) {
  const box = $("summary"); box.replaceChildren();
  const item = (label, value) => box.append(el("span", {}, label + " ", el("b", {}, value)));
  item("", st.running ? "running" : "not running");
  item("", `${st.mode || "-"} ${st.symbol || "-"} ${st.timeframe || ""}`);
  item("equity", money(st.equity));
  if (st.equity != null && st.initial_equity) item("vs start", pct(st.equity / st.initial_equity - 1));
  item("position", st.position == null ? "-" : st.position.toFixed(6));
  item("last tick", when(st.last_tick));
}

function halts(h) {
  const badge = $("halt-badge");
  badge.textContent = h.halted ? "HALTED" : "trading";
  badge.className = "badge" + (h.halted ? " halted" : "");
  const why = h.active.map((x) => `${x.reason} since ${when(x.since)} (${x.source})` + (x.details ? `: ${x.details}` : ""));
  if (h.halt_file.exists) why.push(`halt file ${h.halt_file.path}`);
  $("halt-text").textContent = why.length ? why.join("; ") : "no halt in force";
}

function equityPlot(e) {
  const shown = e.time.length < e.decided ? `, ${e.time.length} of ${e.decided} points: each bucket's low and high` : "";
  const where = equityRange ? " in this range (double-click: the whole book)" : "";
  $("equity-note").textContent = e.time.length ? `max drawdown${where} ${pct(e.max_drawdown)}${shown}`
    : (equityRange ? "(no decision in this range)" : "(no decision yet)");
  const traces = [
    { x: e.time, y: e.equity, name: "bot", type: "scatter", mode: "lines", line: { color: "#1f77b4", width: 1.6 } },
    { x: e.time, y: e.buy_and_hold, name: "buy and hold", type: "scatter", mode: "lines", line: { color: "#8c8c8c", width: 1 } },
    { x: e.time, y: e.drawdown.map((d) => d * 100), name: "drawdown %", type: "scatter", mode: "lines",
      fill: "tozeroy", line: { color: "#c62828", width: 1 }, yaxis: "y2" },
  ];
  const layout = {
    margin: { l: 56, r: 10, t: 10, b: 30 }, legend: { orientation: "h", y: 1.08 },
    yaxis: { domain: [0.32, 1], title: { text: "equity" } },
    yaxis2: { domain: [0, 0.24], title: { text: "DD %" } }, hovermode: "x unified",
    uirevision: "equity",  // a refresh keeps the operator's zoom
  };
  return Plotly.react("equity", traces, layout, PLOT_CONFIG).then((gd) => {
    performance.mark("chartrl:equity");
    if (!gd._chartrlZoom) { gd._chartrlZoom = true; gd.on("plotly_relayout", zoomed); }
  });
}

// A zoom asks the server for that range at full detail (the overview holds each bucket's low and
// high only); a double click (autorange) goes back to the whole book.
function zoomed(ev) {
  const range = ev["xaxis.range"] || (ev["xaxis.range[0]"] !== undefined ? [ev["xaxis.range[0]"], ev["xaxis.range[1]"]] : null);
  const next = ev["xaxis.autorange"] ? null : range;
  if (next === null && !ev["xaxis.autorange"]) return;  // a y-only or legend change
  if (JSON.stringify(next) === JSON.stringify(equityRange)) return;
  equityRange = next;
  json(equityUrl()).then(equityPlot).catch((e) => { $("equity-note").textContent = e.message; });
}

function candlePlot(c, trades) {
  const first = c.time[0];
  const shown = trades.filter((t) => t.time >= first);
  const side = (s) => shown.filter((t) => t.side === s);
  const marker = (s, symbol, color) => ({
    x: side(s).map((t) => t.time), y: side(s).map((t) => t.price), name: s, type: "scatter", mode: "markers",
    marker: { symbol, size: 11, color, line: { color: "#000", width: 1 } },
    text: side(s).map((t) => `${s} ${num(t.amount, 6)} @ ${money(t.price)}`), hoverinfo: "text",
  });
  const traces = [
    { x: c.time, open: c.open, high: c.high, low: c.low, close: c.close, type: "candlestick", name: c.symbol,
      increasing: { line: { color: "#1a7f37" } }, decreasing: { line: { color: "#c62828" } } },
    marker("buy", "triangle-up", "#2ca02c"), marker("sell", "triangle-down", "#d62728"),
  ];
  const layout = { margin: { l: 56, r: 10, t: 10, b: 30 }, showlegend: false, xaxis: { rangeslider: { visible: false } } };
  Plotly.react("candles", traces, layout, PLOT_CONFIG);
}

function decision(rows) {
  const box = $("decision"); box.replaceChildren();
  const d = rows[0];
  if (!d) { box.append(el("p", { class: "muted" }, "no decision recorded yet")); return; }
  const pair = (k, v, cls) => { box.append(el("dt", {}, k), el("dd", cls ? { class: cls } : {}, v)); };
  pair("candle", when(d.candle));
  pair("policy said", d.action, d.action);
  pair("risk verdict", `${d.final_action} (${d.risk.verdict})`, d.final_action);
  pair("price", money(d.price));
  pair("fill", d.fill ? `${d.fill.side} ${num(d.fill.amount, 6)} @ ${money(d.fill.price)}` : "none");
  pair("model", d.model_version);
}

function qPlot(rows) {
  const d = rows[0];
  if (d && d.q) {
    const names = Object.keys(d.q);
    return Plotly.react("qvalues", [{ x: names, y: names.map((k) => d.q[k]), type: "bar",
      marker: { color: names.map((k) => (k === d.action ? "#1f77b4" : "#b0bec5")) } }],
      { margin: { l: 40, r: 10, t: 20, b: 24 }, title: { text: "Q values", font: { size: 12 } } }, PLOT_CONFIG);
  }
  $("qvalues").replaceChildren(el("p", { class: "muted" }, d ? "a rule strategy: no Q values" : ""));
}

async function chartImage() {
  try {
    const blob = await (await api("/api/chart/latest.png")).blob();
    if (chartUrl) URL.revokeObjectURL(chartUrl);
    chartUrl = URL.createObjectURL(blob);
    $("chart-img").src = chartUrl; $("chart-img").hidden = false; $("chart-msg").textContent = "";
  } catch (e) {
    $("chart-img").hidden = true; $("chart-msg").textContent = e.message;
  }
}

function model(m, retrains) {
  const box = $("model"); box.replaceChildren();
  const dl = el("dl", { class: "decision" });
  const pair = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, v));
  pair("strategy", m.strategy); pair("version", m.version || "-"); pair("saved", when(m.saved_at));
  pair("parent", m.parent || "-");
  if (m.data_range) pair("trained on", `${when(m.data_range.from)} .. ${when(m.data_range.until)}`);
  const val = m.metrics || {};
  for (const k of ["sharpe", "total_return", "max_drawdown", "trades"]) if (val[k] != null) pair("validation " + k, num(val[k]));
  if (m.skill) pair("last retrain", `${m.skill.status}: champion ${num(m.skill.champion_score)} vs challenger ${num(m.skill.challenger_score)}`);
  if (m.error) pair("error", m.error);
  box.append(dl);
  $("retrains").replaceChildren(retrains.length ? table([
    ["finished", (r) => when(r.finished || r.started)],
    ["outcome", (r) => r.status],
    ["champion", (r) => num(r.metrics && r.metrics.champion_score)],
    ["challenger", (r) => num(r.metrics && r.metrics.challenger_score)],
    ["why", (r) => (r.metrics && r.metrics.reason) || r.error || "-"],
  ], retrains) : el("p", { class: "muted" }, "no retrain yet"));
}

function decisions(rows) {
  $("decisions").replaceChildren(table([
    ["candle", (d) => when(d.candle)],
    ["policy", (d) => d.action, (d) => d.action],
    ["final", (d) => d.final_action, (d) => d.final_action],
    ["verdict", (d) => d.risk.verdict],
    ["Q hold / buy / sell", (d) => d.q ? Object.values(d.q).map((x) => x.toFixed(3)).join(" / ") : "-"],
    ["price", (d) => money(d.price)],
    ["fill", (d) => d.fill ? `${d.fill.side} ${num(d.fill.amount, 6)}` : ""],
  ], rows));
}

// Points the equity plot asks for: a bucket per 2 pixels of its width, each keeping the min and
// max of the three lines (the server picks them), so a year of hours costs what a screen shows.
const equityPoints = () => 3 * Math.max(400, $("equity").clientWidth || 0);
let equityRange = null;  // [from, to] while the operator has zoomed into the equity plot
const equityUrl = () => `/api/equity?points=${equityPoints()}` +
  (equityRange ? `&from=${encodeURIComponent(iso(equityRange[0]))}&to=${encodeURIComponent(iso(equityRange[1]))}` : "");
// Plotly's axis ranges are "YYYY-MM-DD HH:MM:SS.sss" in the data's (UTC) clock, maybe just a date.
const iso = (r) => String(r).trim().replace(" ", "T");

async function refresh() {
  // The equity plot is the page's first picture: its data is asked for first, and each panel
  // draws when its own data is in rather than when the slowest request is.
  const eq = json(equityUrl()).then((e) => { performance.mark("chartrl:equity-data"); return e; });
  const [st, h, dec, trades, m, rt] = ["/api/status", "/api/halts", "/api/decisions?limit=50",
    "/api/trades?limit=2000", "/api/model", "/api/retrains?limit=20"].map((p) => json(p));
  // The candles and the chart image (a render on the server) wait for the equity's data, so they
  // do not compete with it for the server's CPU; the other plots wait for the equity plot to be
  // drawn, so they do not compete with it for the browser's.
  const later = eq.catch(() => null);
  const candles = later.then(() => json("/api/candles?limit=200"));
  const drawn = Promise.all([eq, plotlyReady]).then(([e]) => equityPlot(e));
  const after = drawn.catch(() => null);
  const parts = [
    drawn, st.then(summary), h.then(halts), dec.then(decisions), dec.then(decision),
    Promise.all([m, rt]).then(([a, b]) => model(a, b)),
    later.then(chartImage),
    Promise.all([dec, after]).then(([d]) => qPlot(d)),
    Promise.all([candles, trades, after]).then(([c, t]) => candlePlot(c, t)).catch((e) => {
      if (e.message !== "unauthorised") $("candles").replaceChildren(el("p", { class: "muted" }, e.message));
    }),
  ];
  const failed = (await Promise.allSettled(parts)).find((r) => r.status === "rejected");
  if (!failed) $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  else if (failed.reason.message !== "unauthorised") $("updated").textContent = "refresh failed: " + failed.reason.message;
}

async function haltAction(path, body) {
  $("halt-msg").textContent = "...";
  try {
    const r = await json(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}) });
    $("halt-msg").textContent = r.done ? r.done.join("; ") : `halt #${r.id} recorded: ${r.reason}`;
  } catch (e) { $("halt-msg").textContent = "failed: " + e.message; }
  refresh();
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  $("token").value = "";
  try { await api("/api/status"); showMain(); } catch (e) { if (e.message !== "unauthorised") showLogin(e.message); }
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
$("halt").addEventListener("click", () => {
  const reason = $("halt-reason").value.trim() || "halted from the console";
  if (confirm(`Halt trading? (${reason})`)) haltAction("/api/halt", { reason });
});
$("resume").addEventListener("click", () => { if (confirm("Resume trading: clear every halt?")) haltAction("/api/halt/clear"); });
$("every").textContent = REFRESH_MS / 1000;
if (token()) showMain(); else showLogin("");
