"use strict";
const $ = (id) => document.getElementById(id);
let selected = null;
const tokenInput = $("token");
tokenInput.value = sessionStorage.getItem("hajobs-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("hajobs-token", tokenInput.value));

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}
const when = (ms) => (ms == null ? "-" : new Date(ms).toISOString().replace(".000", ""));
const secs = (ms) => (ms == null ? "-" : (ms / 1000).toFixed(1) + " s");
const stateBadge = (s) => el("span", { class: "state " + s }, s);

function say(text, error) {
  const m = $("message");
  m.textContent = text;
  m.className = error ? "error" : "";
}

async function call(method, path, payload) {
  const headers = {};
  if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
  // A JSON request: a page of another site cannot send one without asking.
  if (method !== "GET") headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: method === "GET" ? undefined : JSON.stringify(payload || {}) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

// A job that declares parameters asks for them (NAME=VALUE separated by
// spaces, its defaults offered); the daemon checks them (400 names a bad one).
function askParams(j) {
  const names = Object.keys(j.params || {});
  if (!names.length) return {};
  const offered = names.map((n) => n + "=" + (j.params[n].default ?? "")).join(" ");
  const text = window.prompt("Parameters of " + j.job_type + " (NAME=VALUE, separated by spaces)", offered);
  if (text === null) return null;
  const params = {};
  for (const pair of text.trim().split(/\s+/).filter(Boolean)) {
    const i = pair.indexOf("=");
    if (i < 1) throw new Error("`" + pair + "`: expected NAME=VALUE");
    if (i < pair.length - 1) params[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return { params };
}

async function trigger(j) {
  const job = j.job_type;
  try {
    const body = askParams(j);
    if (body === null) return;
    say("triggering " + job + " …");
    const t = await call("POST", "/jobs/" + encodeURIComponent(job), body);
    say(t.job_id
      ? "started " + job + " on " + t.node + " as " + t.job_id + " (fencing token " + t.fencing_token + ")"
      : "queued " + job + " at position " + t.queue_position + ": its lock is held; it runs when its turn comes");
    selected = job;
  } catch (e) { say(e.message, true); }
  refresh();
}

async function cancel(job) {
  try {
    const c = await call("DELETE", "/jobs/" + encodeURIComponent(job));
    say(c.job_id ? "asked " + job + " attempt " + c.job_id + " to stop" : job + " is not running");
  } catch (e) { say(e.message, true); }
  refresh();
}

// The parameters a job takes (`*`: required), beside its schedule.
function paramsNote(j) {
  const names = Object.keys(j.params || {}).map((n) => (j.params[n].required ? n + "*" : n));
  if (j.payload && j.payload !== "forbidden") names.push("payload");
  return names.length ? el("span", { class: "muted params" }, " · takes " + names.join(", ")) : "";
}

function renderJobs(jobs) {
  const body = $("jobs");
  body.replaceChildren();
  for (const j of jobs) {
    const latest = j.latest && j.latest.state ? j.latest : null;
    const state = latest ? latest.state : "-";
    const running = state === "RUNNING" || state === "PREPARING";
    const progress = running && latest.content != null ? JSON.stringify(latest.content) : "";
    const holder = j.holder ? (j.holder.owner || "(ha-jobs?)") + " · token " + (j.holder.fencing_token ?? "-") : "-";
    body.append(el("tr", { "data-job": j.job_type },
      el("td", {}, el("a", { class: "job", onclick: () => { selected = j.job_type; refresh(); } }, j.job_type)),
      el("td", {}, j.cron ? el("span", { title: j.cron }, (j.cron_in_words || j.cron) + " (" + j.time_zone + ")") : el("span", { class: "muted" }, j.keep_running ? "always on" : "manual"),
        paramsNote(j)),
      el("td", { class: "mono" }, j.next_firing ? j.next_firing.replace("+00:00", "Z") : "-"),
      el("td", {}, holder),
      el("td", { class: "state-cell" }, latest ? stateBadge(state) : el("span", { class: "muted" }, "never ran")),
      el("td", { class: "progress mono", title: progress }, progress),
      el("td", {},
        el("button", { class: "trigger", "data-job": j.job_type, onclick: () => trigger(j) }, "Trigger"), " ",
        el("button", { class: "cancel", "data-job": j.job_type, onclick: () => cancel(j.job_type), ...(running ? {} : { disabled: "" }) }, "Cancel"))));
  }
  if (!selected && jobs.length) selected = jobs[0].job_type;
}

function renderRecent(entries) {
  $("recent-of").textContent = selected ? "of " + selected : "";
  const body = $("recent");
  body.replaceChildren();
  for (const s of entries) {
    if (!s.state) { body.append(el("tr", {}, el("td", { colspan: 7 }, "corrupt row " + s.row + ": " + s.problem))); continue; }
    body.append(el("tr", { "data-job-id": s.job_id },
      el("td", { class: "mono" }, s.job_id), el("td", { class: "mono" }, s.trigger_id),
      el("td", {}, stateBadge(s.state)), el("td", {}, s.owner || "-"), el("td", {}, s.fencing_token ?? "-"),
      el("td", { class: "mono" }, when(s.timestamp)),
      el("td", { class: "progress mono" }, s.content == null ? "" : JSON.stringify(s.content))));
  }
}

function renderStats(stats) {
  const body = $("stats");
  body.replaceChildren();
  for (const s of stats) {
    body.append(el("tr", {}, el("td", {}, s.job_type), el("td", {}, s.attempts), el("td", {}, s.finished),
      el("td", {}, s.failed), el("td", {}, s.dead), el("td", {}, s.canceled),
      el("td", {}, s.success_rate == null ? "-" : (s.success_rate * 100).toFixed(1) + "%"),
      el("td", {}, secs(s.p50_ms)), el("td", {}, secs(s.p95_ms)), el("td", {}, secs(s.max_ms))));
  }
}

function renderNodes(nodes) {
  const body = $("nodes");
  body.replaceChildren();
  const now = Date.now();
  for (const n of nodes) {
    body.append(el("tr", {}, el("td", {}, n.node_id), el("td", {}, n.host), el("td", {}, n.pid), el("td", {}, n.version),
      el("td", { class: "mono" }, n.http || "-"), el("td", {}, ((now - n.seen_at_ms) / 1000).toFixed(1) + " s ago"),
      el("td", { class: "mono" }, n.running.length ? n.running.join(", ") : "-")));
  }
}

function renderQueue(queued) {
  const body = $("queue");
  body.replaceChildren();
  if (!queued.length) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "nothing waits for a lock")));
  }
  const now = Date.now();
  for (const q of queued) {
    body.append(el("tr", {}, el("td", {}, q.lock_type), el("td", {}, q.position), el("td", {}, q.job_type),
      el("td", { class: "mono" }, q.trigger_id),
      el("td", {}, q.queued_at_ms ? ((now - q.queued_at_ms) / 1000).toFixed(1) + " s ago" : "-"),
      el("td", {}, q.queued_by || "-")));
  }
}

function renderScheduled(scheduled) {
  const body = $("scheduled");
  body.replaceChildren();
  if (!scheduled.length) {
    body.append(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "nothing scheduled")));
  }
  for (const s of scheduled) {
    const by = s.state === "removed" ? s.removed_by : s.state === "pending" ? s.scheduled_by : s.claimed_by;
    body.append(el("tr", { "data-trigger": s.trigger_id }, el("td", { class: "mono" }, when(s.due_at_ms)),
      el("td", {}, s.job_type), el("td", { class: "mono" }, s.trigger_id),
      el("td", { class: "sched-state" }, s.state), el("td", {}, by || "-"), el("td", { class: "mono" }, s.detail || "")));
  }
}

// The figures read many rows: every 10 s (the server caches them as long);
// the scheduled triggers every 5 s.
let statsRead = 0;
let scheduledRead = 0;

async function refresh() {
  try {
    const [health, jobs, nodes, queued] = await Promise.all([
      call("GET", "/health"), call("GET", "/jobs"), call("GET", "/nodes"), call("GET", "/queue")]);
    $("node").textContent = "replica " + health.node;
    renderJobs(jobs);
    if (Date.now() - statsRead > 10000) {
      statsRead = Date.now();
      renderStats(await call("GET", "/stats"));
    }
    renderNodes(nodes);
    renderQueue(queued);
    if (Date.now() - scheduledRead > 5000) {
      scheduledRead = Date.now();
      renderScheduled(await call("GET", "/scheduled"));
    }
    renderRecent(selected ? await call("GET", "/jobs/" + encodeURIComponent(selected) + "?limit=10") : []);
    document.body.dataset.loaded = "true";
  } catch (e) { say("cannot read the cluster: " + e.message, true); }
}

refresh();
setInterval(refresh, 1000);
