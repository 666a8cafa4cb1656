// reconciler dashboard: plain JavaScript, no build step.
// Every value from the API reaches the page through textContent or setAttribute,
// never innerHTML: task output, notes and names are shown as text, never as markup.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "reconciler.token";
const MAX_ROWS = 1000;

const state = {
  tasks: new Map(),          // name -> TaskSummary
  view: "tasks",
  task: null,                // the name on the task page
  detail: null,              // its TaskDetail
  runs: [],                  // its runs
  selectedRun: null,         // run id whose output is shown
  follow: null,              // AbortController of the followed log
  dirty: new Set(),          // task names to re-read (from events)
  flushTimer: null,
  status: null,
};

// ------------------------------------------------------------------ helpers

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function badge(status, text) {
  return el("span", { class: `badge ${status}`, "data-status": status, text: text || status });
}

function fmtZoned(iso, zone) {
  if (!iso) return "-";
  try {
    const parts = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone || "UTC", year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
      timeZoneName: "longOffset",
    }).formatToParts(new Date(iso));
    const get = (t) => (parts.find((p) => p.type === t) || {}).value || "";
    const offset = get("timeZoneName").replace("GMT", "") || "+00:00";
    return `${get("year")}-${get("month")}-${get("day")} ${get("hour")}:${get("minute")}:` +
      `${get("second")} ${offset}`;
  } catch (e) {
    return iso;
  }
}

function relative(iso) {
  if (!iso) return "";
  const seconds = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const abs = Math.abs(seconds);
  let text;
  if (abs < 5) return "now";
  if (abs < 60) text = `${abs} s`;
  else if (abs < 3600) text = `${Math.round(abs / 60)} min`;
  else if (abs < 86400 * 2) text = `${Math.round(abs / 3600)} h`;
  else text = `${Math.round(abs / 86400)} d`;
  return seconds > 0 ? `in ${text}` : `${text} ago`;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function toast(message, isError) {
  const node = $("toast");
  node.textContent = message;
  node.className = isError ? "error" : "";
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, isError ? 8000 : 4000);
}

// ------------------------------------------------------------------- tokens

function getToken() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("token-button").textContent = token ? "Token set" : "Set token";
}

let tokenPrompt = null;  // one dialog at a time: concurrent callers share its answer

function askToken(reason) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $("token-dialog");
  const input = $("token-input");
  input.value = "";
  if (reason) toast(reason, true);
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue === "ok" && input.value.trim()) {
        setToken(input.value.trim());
        resolve(true);
      } else {
        if (dialog.returnValue === "clear") setToken("");
        resolve(false);
      }
    });
    dialog.showModal();
    input.focus();
  }).finally(() => { tokenPrompt = null; });
  return tokenPrompt;
}

// ---------------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json().catch(() => null) : null;
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || "error",
      error.message || `${response.status} ${response.statusText}`);
  }
  return data;
}

// Reads: when the daemon runs with --auth-reads, ask for a token (again while refused).
async function read(path) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await request("GET", path);
    } catch (e) {
      if (e.status !== 401 || attempt >= 3) throw e;
      setToken("");
      if (!await askToken(attempt ? e.message : "This daemon needs a token to read.")) throw e;
    }
  }
}

// Mutations: ask for the token once (kept for the tab), again if it is refused.
async function mutate(path, body) {
  if (!getToken() && !await askToken()) return null;
  try {
    return await request("POST", path, body);
  } catch (e) {
    if (e.status === 401) {
      setToken("");
      if (await askToken(e.message)) return request("POST", path, body);
      return null;
    }
    throw e;
  }
}

function reportError(e) {
  toast(e instanceof ApiError ? e.message : `request failed: ${e.message || e}`, true);
}

// ------------------------------------------------------------------ actions

// A task with parameters (spec.params) gets a form built from their declarations;
// the values go to the API as text, checked by the daemon as the CLI's --param are.
async function trigger(name) {
  let declared;
  try {
    const detail = await read(`${API}/tasks/${encodeURIComponent(name)}`);
    declared = Object.entries((detail.spec && detail.spec.params) || {})
      .filter(([, d]) => !d.secret);
  } catch (e) { reportError(e); return; }
  if (!declared.length) { runTrigger(name, undefined); return; }
  if (!getToken() && !await askToken()) return;
  const params = await askParams(name, declared);
  if (params) runTrigger(name, { params });
}

function paramInput(name, d) {
  const type = d.type || "string";
  const id = `param-${name}`;
  const shown = d.default === undefined || d.default === null ? "" : String(d.default);
  if (type === "boolean" || type === "enum") {
    const options = type === "boolean" ? ["true", "false"] : (d.values || []);
    const select = el("select", { id, name, "data-param": name });
    if (shown === "") select.append(el("option", { value: "", text: "(none)" }));
    for (const v of options) select.append(el("option", { value: v, text: v, selected: v === shown }));
    return select;
  }
  return el("input", {
    id, name, "data-param": name, autocomplete: "off", spellcheck: "false",
    type: type === "string" ? "text" : "number", step: type === "number" ? "any" : null,
    value: shown, placeholder: d.required ? "required" : "",
  });
}

function askParams(name, declared) {
  const dialog = $("trigger-dialog");
  $("trigger-name").textContent = name;
  const fields = clear($("trigger-fields"));
  for (const [param, d] of declared) {
    fields.append(el("label", { for: `param-${param}` },
      el("span", { class: "mono", text: param }),
      d.required ? " (required)" : "",
      d.description ? el("span", { class: "muted", text: ` ${d.description}` }) : null,
      paramInput(param, d)));
  }
  return new Promise((resolve) => {
    dialog.addEventListener("close", function onClose() {
      dialog.removeEventListener("close", onClose);
      if (dialog.returnValue !== "ok") { resolve(null); return; }
      const params = {};
      for (const input of fields.querySelectorAll("[data-param]")) {
        if (input.value !== "") params[input.dataset.param] = input.value;
      }
      resolve(params);
    });
    dialog.returnValue = "";
    dialog.showModal();
    const first = fields.querySelector("[data-param]");
    if (first) first.focus();
  });
}

function paramsText(params) {
  return Object.entries(params || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

async function runTrigger(name, body) {
  try {
    const answer = await mutate(`${API}/tasks/${encodeURIComponent(name)}/trigger`, body);
    if (!answer) return;
    toast(`${name}: run ${answer.run.id} started`);
    markDirty(name);
    if (state.view === "task" && state.task === name) {
      state.selectedRun = answer.run.id;
      refreshTaskPage();
    }
  } catch (e) { reportError(e); }
}

async function suspend(name) {
  if (!getToken() && !await askToken()) return;
  const dialog = $("suspend-dialog");
  $("suspend-name").textContent = name;
  $("suspend-note").value = "";
  dialog.addEventListener("close", async function onClose() {
    dialog.removeEventListener("close", onClose);
    if (dialog.returnValue !== "ok") return;
    const note = $("suspend-note").value.trim();
    try {
      const answer = await mutate(`${API}/tasks/${encodeURIComponent(name)}/suspend`,
        { note: note || null });
      if (!answer) return;
      updateTask(answer.task);
      toast(answer.changed ? `${name} suspended` : `${name} was already suspended`);
    } catch (e) { reportError(e); }
  });
  dialog.showModal();
  $("suspend-note").focus();
}

async function resume(name) {
  try {
    const answer = await mutate(`${API}/tasks/${encodeURIComponent(name)}/resume`,
      { catchUp: false });
    if (!answer) return;
    updateTask(answer.task);
    toast(answer.changed ? `${name} resumed` : `${name} was not suspended`);
  } catch (e) { reportError(e); }
}

async function cancelRun(id) {
  try {
    const answer = await mutate(`${API}/runs/${id}/cancel`);
    if (answer) toast(`run ${id}: cancellation requested`);
  } catch (e) { reportError(e); }
}

function actionButtons(task) {
  const box = el("span", { class: "actions" });
  box.append(el("button", {
    type: "button", class: "secondary", "data-action": "trigger", text: "Trigger",
    onclick: () => trigger(task.name),
  }));
  if (task.suspended) {
    box.append(el("button", {
      type: "button", "data-action": "resume", text: "Resume", onclick: () => resume(task.name),
    }));
  } else {
    box.append(el("button", {
      type: "button", class: "ghost", "data-action": "suspend", text: "Suspend",
      onclick: () => suspend(task.name),
    }));
  }
  return box;
}

function suspendedBadge(task) {
  if (!task.suspended) return null;
  const s = task.suspension || {};
  const by = s.source === "override" ? `suspended by ${s.actor || "?"}` : "suspend: true in git";
  const wrap = el("span", { class: "suspension" },
    el("span", { class: "badge suspended", "data-badge": "suspended", title: by, text: "suspended" }));
  if (s.note) wrap.append(el("span", { class: "note", "data-note": "", text: s.note }));
  else if (s.source === "git") wrap.append(el("span", { class: "note", text: "in git" }));
  return wrap;
}

// --------------------------------------------------------------- task table

function taskRow(task) {
  const last = task.lastRun;
  const lastCell = el("td", { class: "last-run" });
  if (last) {
    lastCell.append(badge(last.status), " ",
      el("span", { class: "sub", text: `${fmtDuration(last.durationSeconds)} · ` +
        `${relative(last.finishedAt || last.startedAt || last.slot)}` }));
  } else {
    lastCell.append(el("span", { class: "muted", text: "never ran" }));
  }
  if (task.failing && last && last.status !== "failed" && task.lastResult) {
    lastCell.append(el("span", { class: "sub", text: `last result: ${task.lastResult.status}` }));
  }
  const labels = el("div");
  for (const [k, v] of Object.entries(task.labels || {})) {
    labels.append(el("span", { class: "chip", text: `${k}=${v}` }));
  }
  const next = el("td", { class: "next" });
  if (task.nextFireAt) {
    next.append(el("span", { class: "mono", text: fmtZoned(task.nextFireAt, task.timeZone) }),
      el("span", { class: "sub rel", "data-at": task.nextFireAt, text: relative(task.nextFireAt) }));
  } else {
    next.append(el("span", { class: "muted", text: "-" }));
  }
  const source = task.source || {};
  return el("tr", { "data-task": task.name },
    el("td", { class: "name-cell" },
      el("a", { href: `#/tasks/${encodeURIComponent(task.name)}`, text: task.name }),
      suspendedBadge(task) ? " " : null, suspendedBadge(task), labels),
    el("td", {},
      el("span", { text: task.scheduleText || task.schedule }),
      el("span", { class: "sub mono", text: task.schedule })),
    el("td", { text: task.timeZone }),
    next,
    lastCell,
    el("td", {},
      el("span", { class: "mono", text: source.file || "" }),
      el("span", { class: "sub mono", text: source.revision ? source.revision.slice(0, 12) : "" })),
    el("td", { class: "actions-col" }, actionButtons(task)));
}

function renderTasks() {
  const body = $("tasks").tBodies[0];
  const names = [...state.tasks.keys()].sort();
  const rows = [];
  for (const name of names.slice(0, MAX_ROWS)) rows.push(taskRow(state.tasks.get(name)));
  clear(body).append(...rows);
  const shown = Math.min(names.length, MAX_ROWS);
  $("task-count").textContent = names.length > MAX_ROWS
    ? `showing ${shown} of ${names.length} tasks: narrow with a label selector`
    : `${names.length} task${names.length === 1 ? "" : "s"}`;
  $("tasks-empty").hidden = names.length > 0;
}

function updateTask(task) {
  if (!task) return;
  if (!matchesFilter(task)) state.tasks.delete(task.name);
  else state.tasks.set(task.name, task);
  if (state.view === "tasks") {
    const body = $("tasks").tBodies[0];
    const old = body.querySelector(`tr[data-task="${CSS.escape(task.name)}"]`);
    if (old && state.tasks.has(task.name)) old.replaceWith(taskRow(task));
    else renderTasks();
  }
  if (state.view === "task" && state.task === task.name) refreshTaskPage();
}

function matchesFilter(task) {
  const st = $("state").value;
  if (st === "active" && task.suspended) return false;
  if (st === "suspended" && !task.suspended) return false;
  if (st === "running" && !task.running) return false;
  if (st === "failing" && !task.failing) return false;
  return !$("selector").value.trim() || state.tasks.has(task.name);
}

async function loadTasks() {
  const params = new URLSearchParams();
  const selector = $("selector").value.trim();
  if (selector) params.set("selector", selector);
  if ($("state").value) params.set("state", $("state").value);
  try {
    const data = await read(`${API}/tasks?${params}`);
    state.tasks = new Map(data.items.map((t) => [t.name, t]));
    $("selector").setCustomValidity("");
    renderTasks();
  } catch (e) {
    if (e.code === "invalid_selector") $("selector").setCustomValidity(e.message);
    reportError(e);
  }
}

function tickRelativeTimes() {
  for (const node of document.querySelectorAll(".rel[data-at]")) {
    node.textContent = relative(node.getAttribute("data-at"));
  }
}

// ---------------------------------------------------------------- task page

function fact(list, term, ...values) {
  list.append(el("dt", { text: term }), el("dd", {}, ...values));
}

function renderChart(runs) {
  const box = clear($("task-chart"));
  const points = runs.filter((r) => r.durationSeconds !== null).slice(0, 60).reverse();
  if (!points.length) {
    box.append(el("span", { class: "muted", text: "no finished runs yet" }));
    return;
  }
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const W = Math.max(300, box.clientWidth - 16), H = 160, left = 48, bottom = 20, top = 8;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "run durations, oldest to newest");
  const max = Math.max(...points.map((r) => r.durationSeconds), 0.001);
  const step = Math.min(40, (W - left - 4) / points.length);
  const line = (x1, y1, x2, y2) => {
    const l = document.createElementNS(ns, "line");
    for (const [k, v] of Object.entries({ x1, y1, x2, y2 })) l.setAttribute(k, v);
    l.setAttribute("class", "axis");
    return l;
  };
  const text = (x, y, value, anchor) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", x); t.setAttribute("y", y);
    if (anchor) t.setAttribute("text-anchor", anchor);
    t.textContent = value;
    return t;
  };
  svg.append(line(left, top, left, H - bottom), line(left, H - bottom, W, H - bottom),
    text(left - 4, top + 8, fmtDuration(max), "end"), text(left - 4, H - bottom, "0", "end"),
    text(left, H - 4, "older"), text(W - 2, H - 4, "newer", "end"));
  points.forEach((run, i) => {
    const h = Math.max(1, (run.durationSeconds / max) * (H - bottom - top));
    const rect = document.createElementNS(ns, "rect");
    rect.setAttribute("x", left + 2 + i * step);
    rect.setAttribute("y", H - bottom - h);
    rect.setAttribute("width", Math.max(1, step - 2));
    rect.setAttribute("height", h);
    rect.setAttribute("class", `bar ${run.status}`);
    const title = document.createElementNS(ns, "title");
    title.textContent = `run ${run.id}: ${run.status}, ${fmtDuration(run.durationSeconds)}`;
    rect.append(title);
    svg.append(rect);
  });
  box.append(svg);
}

function renderTaskPage() {
  const t = state.detail;
  if (!t) return;
  $("task-name").textContent = t.name;
  const badges = clear($("task-badges"));
  const sb = suspendedBadge(t);
  if (sb) badges.append(sb);
  if (t.running) badges.append(" ", badge("running", `${t.running} running`));
  if (t.failing) badges.append(" ", badge("failed", "failing"));
  clear($("task-actions")).append(actionButtons(t));

  const facts = clear($("task-facts"));
  fact(facts, "Schedule", el("span", { text: t.scheduleText || "" }), " ",
    el("code", { text: t.schedule }));
  fact(facts, "Time zone", t.timeZone);
  fact(facts, "Runs", el("code", { text: t.runType || "?" }));
  const labels = el("span");
  for (const [k, v] of Object.entries(t.labels || {})) labels.append(el("span", { class: "chip", text: `${k}=${v}` }));
  fact(facts, "Labels", labels);
  if (t.suspended) {
    const s = t.suspension || {};
    fact(facts, "Suspended", s.source === "override"
      ? `by ${s.actor || "?"} at ${fmtZoned(s.at, t.timeZone)}${s.note ? `: ${s.note}` : ""}`
      : "suspend: true in git");
  }
  fact(facts, "Source", el("code", { text: t.source.file }),
    t.source.revision ? ` @ ${t.source.revision.slice(0, 12)}` : "", ` (generation ${t.source.generation})`);
  fact(facts, "Last success", t.lastSuccessAt ? fmtZoned(t.lastSuccessAt, t.timeZone) : "never");
  const counts = Object.entries(t.runCounts || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  fact(facts, "Run counts", counts || "no runs");
  for (const [k, v] of Object.entries(t.annotations || {})) fact(facts, k, v);

  const next = clear($("task-next"));
  if (!t.nextFireTimes.length) next.append(el("li", { class: "muted", text: "none (suspended)" }));
  for (const f of t.nextFireTimes) {
    next.append(el("li", {}, el("span", { class: "mono", text: fmtZoned(f.at, t.timeZone) }), " ",
      el("span", { class: "muted rel", "data-at": f.at, text: relative(f.at) })));
  }

  renderBackfills(state.backfills || [], t.timeZone);
  renderChart(state.runs);
  const body = clear($("runs").tBodies[0]);
  for (const r of state.runs) {
    const info = r.reason || r.error || "";
    const params = paramsText(r.params);
    const row = el("tr", { "data-run": r.id, class: r.id === state.selectedRun ? "selected" : "" },
      el("td", {}, el("a", { href: "#", text: String(r.id),
        onclick: (ev) => { ev.preventDefault(); showOutput(r.id); } })),
      el("td", {}, badge(r.status)),
      el("td", { text: r.trigger + (r.attempt > 1 ? ` #${r.attempt}` : "") }),
      el("td", { class: "mono", text: fmtZoned(r.slot, t.timeZone) }),
      el("td", { text: r.latenessSeconds === null ? "-" : fmtDuration(r.latenessSeconds) }),
      el("td", { text: fmtDuration(r.durationSeconds) }),
      el("td", { text: r.exitCode === null ? "-" : String(r.exitCode) }),
      el("td", { class: "muted" },
        params ? el("span", { class: "chip", "data-params": "", text: params }) : null,
        info.split("\n")[0].slice(0, 120)),
      el("td", {}, r.live ? el("button", { type: "button", class: "ghost", text: "Cancel",
        onclick: () => cancelRun(r.id) }) : null));
    body.append(row);
  }
  if (!state.runs.length) body.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "no runs yet" })));
}

function renderBackfills(items, zone) {
  // The task's backfills, newest first: state, progress n/m, range (its own zone).
  const list = clear($("task-backfills"));
  $("task-backfills-box").hidden = !items.length;
  for (const b of items) {
    const progress = el("progress", { max: String(b.total), value: String(b.done) });
    list.append(el("li", { "data-backfill": String(b.id) },
      badge(b.state), " ", el("span", { class: "mono", text: b.progress }), " ", progress, " ",
      el("span", { class: "muted", text: `${fmtZoned(b.from, zone)} to ${fmtZoned(b.to, zone)}` +
        (b.failed ? `, ${b.failed} failed` : "") })));
  }
}

async function refreshTaskPage() {
  const name = state.task;
  if (!name) return;
  try {
    const [detail, runs, backfills] = await Promise.all([
      read(`${API}/tasks/${encodeURIComponent(name)}`),
      read(`${API}/tasks/${encodeURIComponent(name)}/runs?limit=100`),
      read(`${API}/backfills?task=${encodeURIComponent(name)}&limit=20`),
    ]);
    if (state.task !== name) return;
    state.detail = detail;
    state.runs = runs.items;
    state.backfills = backfills.items;
    renderTaskPage();
    const live = runs.items.find((r) => r.live);
    if (live && (state.selectedRun === null || state.selectedRun === live.id ||
                 !runs.items.some((r) => r.id === state.selectedRun && r.live))) {
      if (!state.follow || state.followId !== live.id) showOutput(live.id);
    } else if (state.selectedRun === null && runs.items.length) {
      showOutput(runs.items[0].id);
    }
  } catch (e) {
    if (e.status === 404) {
      $("task-name").textContent = `${name} (not found)`;
    }
    reportError(e);
  }
}

async function showOutput(id) {
  if (state.follow) state.follow.abort();
  state.follow = null;
  state.selectedRun = id;
  for (const row of document.querySelectorAll("#runs tr[data-run]")) {
    row.classList.toggle("selected", Number(row.getAttribute("data-run")) === id);
  }
  const out = $("task-output");
  const run = state.runs.find((r) => r.id === id);
  $("output-title").textContent = `run ${id}${run && run.live ? " (live)" : ""}`;
  out.textContent = "";
  const controller = new AbortController();
  state.follow = controller;
  state.followId = id;
  try {
    const headers = {};
    if (getToken()) headers.Authorization = `Bearer ${getToken()}`;
    const response = await fetch(`${API}/runs/${id}/log?follow=true`,
      { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok) {
      out.textContent = `(output unavailable: ${response.status})`;
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.append(document.createTextNode(decoder.decode(value, { stream: true })));
      out.scrollTop = out.scrollHeight;
    }
    if (!out.textContent) out.textContent = "(no output)";
    if (state.selectedRun === id) $("output-title").textContent = `run ${id}`;
  } catch (e) {
    if (e.name !== "AbortError") out.append(document.createTextNode(`\n(stream ended: ${e.message})`));
  } finally {
    if (state.follow === controller) { state.follow = null; }
  }
}

// --------------------------------------------------------------- status page

async function loadStatus() {
  try {
    const [status, plan] = await Promise.all([read(`${API}/status`), read(`${API}/plan`)]);
    state.status = status;
    renderBanner(status);
    if (state.view !== "status") return;
    const p = plan.plan;
    const s = p.summary;
    $("plan-summary").textContent = p.hasChanges
      ? `${s.create} to create, ${s.update} to update, ${s.delete} to delete, ${s.unchanged} unchanged`
      : `no pending changes (${s.unchanged} unchanged${plan.revision ? `, at ${plan.revision}` : ""})`;
    const changes = clear($("plan-changes"));
    const symbol = { create: "+", update: "~", delete: "-", keep: "=" };
    for (const c of p.changes) {
      const li = el("li", { "data-change": c.name },
        el("span", { class: `action ${c.action}`, text: symbol[c.action] || "?" }), " ",
        el("strong", { text: c.name }), " ",
        el("span", { class: "muted", text: `${c.action}${c.sourceFile ? ` from ${c.sourceFile}` : ""}` }));
      if (c.reason) li.append(el("span", { class: "sub", text: c.reason }));
      for (const f of c.fields || []) {
        li.append(el("span", { class: "sub mono",
          text: `${f.path}: ${JSON.stringify(f.old)} -> ${JSON.stringify(f.new)}` }));
      }
      changes.append(li);
    }
    const errors = clear($("plan-errors"));
    for (const e of p.errors) {
      const where = `${e.file}${e.line !== null ? `:${e.line}` : ""}`;
      errors.append(el("li", { text: `${where}: ${[e.task, e.field, e.message].filter(Boolean).join(": ")}` }));
    }
    if (!p.errors.length) errors.append(el("li", { class: "muted", text: "none" }));
    const refusals = clear($("plan-refusals"));
    for (const r of p.refusals) refusals.append(el("li", { text: `refused: ${r}` }));
    const drift = clear($("plan-drift"));
    for (const d of p.drift) drift.append(el("li", { text: `${d.name}: ${d.message}` }));
    if (!p.drift.length) drift.append(el("li", { class: "muted", text: "none" }));

    const last = status.lastReconcile;
    $("status-summary").textContent = `mode ${status.mode}, writer ${status.writer || "none"}, ` +
      `${status.tasks.total} tasks (${status.tasks.suspended} suspended, ` +
      `${status.tasks.running} running, ${status.tasks.failing} failing)` +
      (last ? `; last reconcile ${relative(last.at)}${last.error ? ` failed: ${last.error}` : ""}` : "");
    const body = clear($("replicas").tBodies[0]);
    for (const r of status.replicas) {
      const st = r.stoppedAt ? "stopped" : (r.healthy ? "ok" : "stale");
      body.append(el("tr", { "data-replica": r.id },
        el("td", { class: "mono", text: r.id }),
        el("td", {}, badge(st === "ok" ? "succeeded" : (st === "stale" ? "failed" : "skipped"), st)),
        el("td", { text: r.writer ? "writer" : "" }),
        el("td", { text: relative(r.heartbeatAt) }),
        el("td", { text: r.tasks === null ? "-" : String(r.tasks) }),
        el("td", { text: r.activeRuns === null ? "-" : String(r.activeRuns) })));
    }
  } catch (e) { reportError(e); }
}

function renderBanner(status) {
  const banner = $("errors-banner");
  const n = status.manifestErrors.length + status.refusals.length;
  clear(banner);
  banner.hidden = n === 0;
  if (n) banner.append(el("a", { href: "#/status", text: `${n} manifest error${n === 1 ? "" : "s"}` }));
}

// ------------------------------------------------------------------- events

function markDirty(name) {
  state.dirty.add(name);
  if (!state.flushTimer) state.flushTimer = setTimeout(flushDirty, 400);
}

async function flushDirty() {
  state.flushTimer = null;
  const names = [...state.dirty];
  state.dirty.clear();
  if (state.view === "tasks") {
    if (names.length > 40) { loadTasks(); return; }
    for (const name of names) {
      if (!state.tasks.has(name) && ($("selector").value || $("state").value)) continue;
      try {
        const t = await read(`${API}/tasks/${encodeURIComponent(name)}`);
        updateTask(t);
      } catch (e) {
        if (e.status === 404) { state.tasks.delete(name); renderTasks(); }
      }
    }
  } else if (state.view === "task" && names.includes(state.task)) {
    refreshTaskPage();
  }
}

function onEvent(type, data) {
  if (type === "hello") setConn(true);
  else if (type === "run") markDirty(data.task);
  else if (type === "task") markDirty(data.name);
  else if (type === "reconcile") {
    if (data.created || data.deleted) loadTasks();
    loadStatus();
  } else if (type === "resync") {
    loadTasks();
    loadStatus();
  }
}

function setConn(on) {
  const node = $("conn");
  node.textContent = on ? "live" : "offline";
  node.className = `conn ${on ? "on" : "off"}`;
}

async function connectEvents() {
  try {
    const headers = { Accept: "text/event-stream" };
    if (getToken()) headers.Authorization = `Bearer ${getToken()}`;
    const response = await fetch(`${API}/events`, { headers, cache: "no-store" });
    if (response.status === 401) {
      setToken("");
      if (await askToken("This daemon needs a token to read.")) { connectEvents(); return; }
    } else if (response.ok) {
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          if (data.length) {
            try { onEvent(type, JSON.parse(data.join("\n"))); } catch (e) { /* ignore */ }
          }
        }
      }
    }
  } catch (e) { /* reconnect below */ }
  setConn(false);
  setTimeout(connectEvents, 3000);
}

// ------------------------------------------------------------------- routing

function route() {
  const hash = location.hash || "#/";
  const match = hash.match(/^#\/tasks\/(.+)$/);
  for (const v of ["tasks", "task", "status"]) $(`view-${v}`).hidden = true;
  for (const a of document.querySelectorAll("nav a")) a.classList.remove("current");
  if (state.follow && !(match && decodeURIComponent(match[1]) === state.task)) {
    state.follow.abort();
    state.follow = null;
  }
  if (match) {
    const name = decodeURIComponent(match[1]);
    if (state.task !== name) {
      state.task = name;
      state.detail = null;
      state.runs = [];
      state.selectedRun = null;
      clear($("task-output"));
      $("task-name").textContent = name;
    }
    state.view = "task";
    $("view-task").hidden = false;
    refreshTaskPage();
  } else if (hash.startsWith("#/status")) {
    state.view = "status";
    state.task = null;
    $("view-status").hidden = false;
    document.querySelector('nav a[data-nav="status"]').classList.add("current");
    loadStatus();
  } else {
    state.view = "tasks";
    state.task = null;
    $("view-tasks").hidden = false;
    document.querySelector('nav a[data-nav="tasks"]').classList.add("current");
    loadTasks();
  }
}

function init() {
  setToken(getToken());
  $("token-button").addEventListener("click", () => askToken());
  let timer = null;
  $("selector").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(loadTasks, 300);
  });
  $("state").addEventListener("change", loadTasks);
  window.addEventListener("hashchange", route);
  setInterval(tickRelativeTimes, 10000);
  route();
  loadStatus();
  connectEvents();
}

document.addEventListener("DOMContentLoaded", init);
