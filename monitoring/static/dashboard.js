// The dashboard: one EventSource for live frames, uPlot for the charts.
// Every value from the server goes in through textContent, never innerHTML: payloads are data.
"use strict";

const KEEP_SECONDS = 15 * 60;
// The admin token lives in this tab's sessionStorage only: never in the URL, gone with the tab.
const TOKEN_KEY = "ss-admin-token";
// A refused stream (429: too many open per client) is not retried by EventSource itself.
const STREAM_RETRY_MS = 5000;
const SERIES_FIELDS = ["t", "q", "f", "w", "ar", "cr", "p50", "p95"];
const $ = (id) => document.getElementById(id);

let series = Object.fromEntries(SERIES_FIELDS.map((k) => [k, []]));
const charts = {};
let lastFrameAt = 0;
let lastAdvice = "";
let filteredAt = 0;

// -- helpers ------------------------------------------------------------------------------

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = document.createElement("td");
      td.appendChild(cell);
      tr.appendChild(td);
    } else if (cell && typeof cell === "object") {
      tr.appendChild(el("td", cell.text, cell.className));
    } else {
      tr.appendChild(el("td", cell ?? ""));
    }
  }
  return tr;
}

function seconds(value) {
  if (value === null || value === undefined) return "-";
  return value < 1 ? (value * 1000).toFixed(1) + " ms" : value.toFixed(2) + " s";
}

function clock(value) {
  if (!value) return "";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return date.toLocaleTimeString();
}

async function getJSON(url, headers = {}) {
  const response = await fetch(url, { headers: { Accept: "application/json", ...headers } });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

// -- admin token --------------------------------------------------------------------------

function adminToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function renderTokenState(message) {
  $("token-state").textContent = message ?? (adminToken() ? "token set for this tab" : "");
}

function initToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    $("token-input").value = "";
    renderTokenState();
  });
  $("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderTokenState();
  });
  renderTokenState();
}

// -- charts -------------------------------------------------------------------------------

function chartWidth(node) {
  return Math.max(300, node.clientWidth || node.parentElement.clientWidth - 20);
}

function makeChart(id, lines) {
  const node = $(id);
  const opts = {
    width: chartWidth(node),
    height: 200,
    legend: { live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
    series: [{}, ...lines.map(([label, stroke]) => ({ label, stroke, width: 1.5, spanGaps: false }))],
    axes: [{}, { size: 50 }],
  };
  charts[id] = { plot: new uPlot(opts, chartData(lines.map((l) => l[2])), node), fields: lines.map((l) => l[2]) };
}

function chartData(fields) {
  return [series.t, ...fields.map((f) => series[f])];
}

function drawCharts() {
  for (const chart of Object.values(charts)) chart.plot.setData(chartData(chart.fields));
}

function initCharts() {
  makeChart("chart-queue", [["queued", "#b45309", "q"], ["in flight", "#2563eb", "f"]]);
  makeChart("chart-workers", [["workers", "#15803d", "w"]]);
  makeChart("chart-rates", [["arrivals/s", "#9333ea", "ar"], ["completions/s", "#0891b2", "cr"]]);
  makeChart("chart-latency", [["p50", "#2563eb", "p50"], ["p95", "#dc2626", "p95"]]);
  window.addEventListener("resize", () => {
    for (const [id, chart] of Object.entries(charts)) chart.plot.setSize({ width: chartWidth($(id)), height: 200 });
  });
}

function appendSample(sample) {
  const n = series.t.length;
  if (n && sample.t <= series.t[n - 1]) return;
  for (const k of SERIES_FIELDS) series[k].push(sample[k] ?? null);
  const cutoff = sample.t - KEEP_SECONDS;
  let drop = 0;
  while (drop < series.t.length && series.t[drop] < cutoff) drop++;
  if (drop) for (const k of SERIES_FIELDS) series[k].splice(0, drop);
}

async function loadSeries() {
  const data = await getJSON("/api/series");
  series = Object.fromEntries(SERIES_FIELDS.map((k) => [k, data[k] || []]));
  drawCharts();
}

// -- panels -------------------------------------------------------------------------------

function renderCards(cards) {
  const formats = {
    avg_processing_time: seconds,
    p95_processing_time: seconds,
    error_rate: (v) => ((v || 0) * 100).toFixed(1) + " %",
  };
  for (const [key, value] of Object.entries(cards)) {
    const node = $("card-" + key);
    if (node) node.textContent = formats[key] ? formats[key](value) : String(value ?? "-");
  }
}

function renderWorkers(workers) {
  const body = $("workers");
  body.replaceChildren(
    ...workers.map((w) =>
      row([
        w.worker_id,
        (w.pid ?? "?") + " / " + (w.host ?? "?"),
        { text: w.state, className: "state-" + w.state },
        w.in_flight,
        w.completed,
        w.failed,
        w.cancelled ?? 0,
        clock(w.last_seen) + " (" + w.age_seconds + " s ago)",
      ])
    )
  );
  if (!workers.length) body.appendChild(row(["no workers seen in the last minutes"]));
}

function renderScaling(advice) {
  $("scaling-action").textContent = advice.action.replace("_", " ");
  $("scaling-action").parentElement.dataset.action = advice.action;
  $("scaling-desired").textContent = advice.desired_workers;
  $("scaling-current").textContent = advice.current_workers;
  $("scaling-urgency").textContent = advice.urgency;
  $("scaling-reasons").replaceChildren(...advice.reasons.map((r) => el("li", r)));
  $("scaling-numbers").replaceChildren(
    ...Object.entries(advice.numbers).map(([k, v]) => row([k.replaceAll("_", " "), v === null ? "-" : v]))
  );
  const key = advice.action + ":" + advice.desired_workers;
  if (key !== lastAdvice) {
    lastAdvice = key;
    loadScalingHistory().catch(() => {});
  }
}

async function loadScalingHistory() {
  const data = await getJSON("/api/scaling");
  $("scaling-mode").textContent = "(" + data.mode + ", " + data.min_workers + ".." + data.max_workers + " workers)";
  $("scaling-history").replaceChildren(
    ...data.history.map((h) =>
      row([clock(h.at), h.action, h.current_workers, h.desired_workers, h.urgency, h.reasons.join("; ")])
    )
  );
  const decisions = data.decisions.length
    ? data.decisions.map((d) => row([clock(d.at), d.from, d.to, (d.reasons || []).join("; ")]))
    : [row(["none yet: the dashboard advises, an autoscaler decides"])];
  $("scaling-decisions").replaceChildren(...decisions);
}

// A scenario (./demo.sh scenario NAME) running now or finished in the last minutes.
function renderScenario(scenario) {
  const banner = $("scenario");
  banner.hidden = !scenario;
  if (!scenario) return;
  banner.dataset.state = scenario.state;
  const outcome = scenario.state === "running" ? "running" : scenario.state.toUpperCase();
  const when = scenario.ended_at ? " at " + clock(scenario.ended_at) : " since " + clock(scenario.started_at);
  banner.textContent =
    "Scenario " + scenario.name + " (" + scenario.concept + "): " + outcome + when + (scenario.detail ? " - " + scenario.detail : "");
}

// -- alerts (core/alerts.py; the same as GET /api/alerts) --------------------------------

function alertItem(alert) {
  const item = el("li", undefined, "alert-" + alert.state);
  item.dataset.name = alert.name;
  const when = alert.state === "resolved" ? "resolved " + clock(alert.resolved_at) : "since " + clock(alert.since);
  item.append(el("b", alert.summary), el("span", " " + when + ": " + alert.detail), el("small", alert.hint));
  return item;
}

function renderAlerts(alerts) {
  if (!alerts) return;
  const banner = $("alerts-banner");
  banner.hidden = alerts.firing.length === 0;
  banner.textContent = alerts.firing.length
    ? alerts.firing.length + " alert" + (alerts.firing.length > 1 ? "s" : "") + ": " + alerts.firing.map((a) => a.summary).join("; ")
    : "";
  $("alerts-count").textContent = "(" + alerts.firing.length + " firing, " + alerts.resolved.length + " resolved lately)";
  $("alerts-list").replaceChildren(...alerts.firing.map(alertItem), ...alerts.resolved.map(alertItem));
}

// -- tasks --------------------------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  for (const name of ["status", "type", "q"]) {
    const value = $("filter-" + name).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

// A scheduled task says when it is due: the scheduled filter lists them soonest first.
function statusText(task) {
  return task.status === "scheduled" && task.run_at ? "scheduled for " + clock(task.run_at) : task.status;
}

function renderTasks(tasks) {
  const body = $("tasks");
  body.replaceChildren(
    ...tasks.map((t) => {
      const tr = row([
        t.id,
        t.type,
        { text: statusText(t), className: "status-" + t.status },
        t.priority ?? "normal",
        clock(t.created_at),
        t.processing_time === null || t.processing_time === undefined ? "" : t.processing_time.toFixed(3),
        t.worker_id ?? "",
        t.attempts,
      ]);
      tr.dataset.taskId = t.id;
      return tr;
    })
  );
  if (!tasks.length) body.appendChild(row(["no tasks match"]));
}

async function loadFilteredTasks() {
  filteredAt = Date.now();
  const params = filters();
  params.set("limit", "50");
  const data = await getJSON("/api/tasks?" + params.toString());
  renderTasks(data.tasks);
}

// The detail: ids, status and timings for anyone; data, result and error only with the admin token.
async function fetchTask(id) {
  const url = "/api/tasks/" + encodeURIComponent(id);
  const token = adminToken();
  if (!token) return getJSON(url);
  const response = await fetch(url, { headers: { Accept: "application/json", Authorization: "Bearer " + token } });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    renderTokenState("that token was refused; paste it again");
    return getJSON(url);
  }
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.json();
}

async function showTask(id) {
  const task = await fetchTask(id);
  $("detail-id").textContent = task.id;
  const fields = [
    ["type", task.type],
    ["status", task.status],
    ["priority", task.priority],
    ["scheduled for", task.run_at],
    ["attempts", task.attempts],
    ["worker", task.worker_id],
    ["created", task.created_at],
    ["started", task.started_at],
    ["completed", task.completed_at],
    ["processing time", task.processing_time === null ? null : task.processing_time + " s"],
  ];
  $("detail-fields").replaceChildren(...fields.flatMap(([k, v]) => [el("dt", k), el("dd", v ?? "-")]));
  const unlocked = "data" in task;
  $("detail-locked").hidden = unlocked;
  $("detail-private").hidden = !unlocked;
  $("detail-data").textContent = unlocked ? JSON.stringify(task.data, null, 2) : "";
  $("detail-result").textContent = unlocked && task.result !== null ? JSON.stringify(task.result, null, 2) : "-";
  $("detail-error").textContent = unlocked ? task.error ?? "-" : "-";
  $("task-detail").hidden = false;
}

function initTasks() {
  const form = $("task-filter");
  let debounce = 0;
  const changed = () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => loadFilteredTasks().catch(() => {}), 200);
  };
  form.addEventListener("input", changed);
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("reset", () => setTimeout(changed, 0));
  $("tasks").addEventListener("click", (event) => {
    const tr = event.target.closest("tr");
    if (tr && tr.dataset.taskId) showTask(tr.dataset.taskId).catch(() => {});
  });
  $("detail-close").addEventListener("click", () => {
    $("task-detail").hidden = true;
  });
}

// -- the stream ---------------------------------------------------------------------------

function setLive(state) {
  const badge = $("live");
  badge.dataset.state = state;
  badge.textContent = state;
}

function onFrame(frame) {
  lastFrameAt = Date.now();
  setLive("live");
  $("updated").textContent = "updated " + clock(frame.sample.t);
  renderCards(frame.cards);
  appendSample(frame.sample);
  drawCharts();
  renderWorkers(frame.workers);
  renderScaling(frame.scaling);
  renderScenario(frame.scenario);
  renderAlerts(frame.alerts);
  if (filters().toString()) {
    // A filtered view is a query, refreshed every 2 s while the page is open.
    if (Date.now() - filteredAt > 2000) loadFilteredTasks().catch(() => {});
  } else {
    renderTasks(frame.recent_tasks);
  }
}

function connect() {
  const source = new EventSource("/api/stream");
  let lostAt = 0;
  source.addEventListener("frame", (event) => onFrame(JSON.parse(event.data)));
  source.addEventListener("open", () => {
    // Back after a drop: refill the charts' gap from the stored samples.
    if (lostAt) loadSeries().catch(() => {});
    lostAt = 0;
  });
  source.addEventListener("error", () => {
    lostAt = lostAt || Date.now();
    if (source.readyState === EventSource.CLOSED) {
      // Refused (429: this client has too many dashboards open): EventSource gives up; try later.
      setLive("refused");
      source.close();
      setTimeout(connect, STREAM_RETRY_MS);
      return;
    }
    setLive("reconnecting"); // EventSource retries by itself (the server asks for 1 s)
  });
}

function watchStaleness() {
  setInterval(() => {
    if (lastFrameAt && Date.now() - lastFrameAt > 3000 && $("live").dataset.state === "live") setLive("stale");
  }, 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  initCharts();
  initToken();
  initTasks();
  loadSeries()
    .catch(() => {})
    .finally(connect);
  loadScalingHistory().catch(() => {});
  watchStaleness();
});
