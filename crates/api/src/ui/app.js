// Wharf UI: reads the node's JSON APIs and follows /v2/events; no framework,
// no build step. Pages are hash routes (#/cluster, #/apps, #/app/<id>,
// #/deployments, #/queue). A page builds its static parts once (mount) and
// refills its live parts on every refresh (update), so forms, dialogs and
// log views keep their state while the data changes underneath.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

// h("div", {class: "x", onclick: f}, child, "text", [more]) -> Element
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  const add = (c) => {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) c.forEach(add);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  };
  children.forEach(add);
  return el;
}

function fill(el, ...children) {
  el.replaceChildren();
  children.flat().forEach((c) => c !== null && c !== undefined && el.append(c instanceof Node ? c : String(c)));
}

// ---- login -------------------------------------------------------------
// With authentication on, the page asks for a token or a user and password
// and sends them as an Authorization header. The event stream and the log
// view (EventSource, plain GETs) cannot send headers: a cookie carries the
// same value for them, and the node accepts it for reads only.

let auth = sessionStorage.getItem("wharf_auth");
function setAuth(value) {
  auth = value;
  if (value) {
    sessionStorage.setItem("wharf_auth", value);
    document.cookie = `wharf_auth=${value.replace(" ", ":")}; path=/; SameSite=Strict`;
  } else {
    sessionStorage.removeItem("wharf_auth");
    document.cookie = "wharf_auth=; path=/; max-age=0; SameSite=Strict";
  }
  $("#logout").hidden = !value;
}

let loginOpen = false;
function showLogin(message) {
  $("#login-message").textContent = message || "";
  if (loginOpen) return;
  loginOpen = true;
  // A panel in place of the page (not a modal dialog): nothing of the
  // cluster is shown until the node accepts the credentials.
  $("#login").hidden = false;
  $("#view").hidden = true;
  fill($("#summary"));
  $("#live").textContent = "logged out"; $("#live").className = "live off";
  $("#login-token").focus();
}

async function submitLogin(e) {
  e.preventDefault();
  const token = $("#login-token").value.trim();
  const user = $("#login-user").value, pass = $("#login-pass").value;
  const value = token ? `Bearer ${token}` : `Basic ${btoa(`${user}:${pass}`)}`;
  const r = await fetch("/v2/info", { headers: { Authorization: value, "X-Wharf-UI": "1" } });
  if (!r.ok) {
    $("#login-message").textContent = r.status === 401 ? "Unknown token, or wrong user or password." : `The node answered ${r.status}.`;
    return;
  }
  setAuth(value);
  loginOpen = false;
  $("#login").hidden = true;
  $("#view").hidden = false;
  $("#login-form").reset();
  refresh();
  if (source) source.close();
  connect();
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Wharf-UI": "1" } };
  if (auth) opts.headers.Authorization = auth;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (resp.status === 401) {
    if (auth) setAuth(null);
    showLogin("This node needs you to log in.");
  }
  const text = await resp.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  return { status: resp.status, ok: resp.ok, data, headers: resp.headers };
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const appPath = (id) => "/v2/apps" + id.split("/").map(encodeURIComponent).join("/");
// 2026-12-01 23:23:08, in the browser's time zone: short and sortable.
const fmtTime = (t) => (t ? new Date(t).toLocaleString("sv-SE") : "—");
const fmtNum = (n, d = 1) => (Number.isInteger(n) ? String(n) : Number(n).toFixed(d));

// ---- state ------------------------------------------------------------

const state = {
  apps: [], deployments: [], queue: [], marathonQueue: [], nodes: [], raft: {}, info: {}, leader: null,
  loaded: false, events: [], // recent events (newest last), for the app page
};

let refreshTimer = null;
// Every change the pages show comes with an event (the leader's expunge of
// an ended task, which also records lastTaskFailure and the backoff, sends
// instance_changed_event), so one read shortly after a burst of events is
// enough. (Node changes without task changes have no Marathon event; the
// next event, or a reconnect, shows them.)
function scheduleRefresh(delay = 150) {
  if (!refreshTimer) refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, delay);
}

async function refresh() {
  const [apps, deps, queue, mqueue, nodes, info, leader] = await Promise.all([
    api("GET", "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.lastTaskFailure"),
    api("GET", "/v2/deployments"),
    api("GET", "/wharf/v1/queue"),
    api("GET", "/v2/queue"),
    api("GET", "/wharf/v1/nodes"),
    api("GET", "/v2/info"),
    api("GET", "/v2/leader"),
  ].map((p) => p.catch((e) => ({ ok: false, data: null, error: e }))));
  if (loginOpen) return; // nothing of the cluster until logged in
  if (apps.ok) state.apps = apps.data.apps;
  if (deps.ok) state.deployments = deps.data;
  if (queue.ok) state.queue = queue.data.queue;
  if (mqueue.ok) state.marathonQueue = mqueue.data.queue;
  if (nodes.ok) { state.nodes = nodes.data.nodes; state.raft = nodes.data.raft || {}; }
  if (info.ok) state.info = info.data;
  state.leader = leader.ok ? leader.data.leader : null;
  // Redraw only what changed: a redraw replaces rows, and a row replaced
  // under the pointer loses the click.
  const seen = JSON.stringify([state.apps, state.deployments, state.queue, state.nodes, state.raft, state.leader]);
  if (state.loaded && seen === lastSeen) return;
  lastSeen = seen;
  state.loaded = true;
  renderSummary();
  if (current && current.update) current.update();
}
let lastSeen = null;

function renderSummary() {
  const running = state.apps.reduce((n, a) => n + a.tasksRunning, 0);
  fill($("#summary"), `${plural(state.nodes.length, "node")} · ${plural(state.apps.length, "app")} · ${running} tasks running · ` +
    `${plural(state.deployments.length, "deployment")} · leader ${state.leader || "none"}`);
}

// ---- live updates -----------------------------------------------------

let source = null;
let retry = 1000;
function connect() {
  const live = $("#live");
  source = new EventSource("/v2/events");
  source.onopen = () => {
    retry = 1000;
    live.textContent = "live"; live.className = "live on";
    $("#banner").hidden = true;
    refresh(); // what changed while we were away
  };
  source.onmessage = (e) => onEvent("message", e);
  const kinds = ["status_update_event", "deployment_info", "deployment_success", "deployment_failed",
    "deployment_step_success", "deployment_step_failure", "api_post_event", "app_terminated_event",
    "health_status_changed_event", "unhealthy_instance_kill_event", "failed_health_check_event",
    "instance_changed_event", "group_change_success", "instance_health_changed_event"];
  kinds.forEach((k) => source.addEventListener(k, (e) => onEvent(k, e)));
  source.onerror = () => {
    source.close();
    live.textContent = "offline"; live.className = "live off";
    if (loginOpen) { live.textContent = "logged out"; return; } // reconnected after the login
    const b = $("#banner");
    b.textContent = `Lost the connection to ${location.host}'s event stream; reconnecting in ${Math.round(retry / 1000)} s. ` +
      "What you see may be out of date.";
    b.hidden = false;
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

function onEvent(kind, e) {
  let data = null;
  try { data = JSON.parse(e.data); } catch (_) { return; }
  state.events.push({ kind: data.eventType || kind, data, at: data.timestamp });
  if (state.events.length > 500) state.events.splice(0, state.events.length - 500);
  scheduleRefresh();
}

// ---- flash messages and dialogs --------------------------------------

function flash(text, error = false) {
  const f = $("#flash");
  f.textContent = text; f.className = error ? "flash error" : "flash"; f.hidden = false;
  clearTimeout(flash.t);
  flash.t = setTimeout(() => { f.hidden = true; }, error ? 12000 : 5000);
}

function errorText(r) {
  if (r.data && typeof r.data === "object" && r.data.message) {
    const details = (r.data.details || []).map((d) => `${d.path}: ${(d.errors || []).join(", ")}`).join("; ");
    return `${r.status}: ${r.data.message}${details ? " (" + details + ")" : ""}`;
  }
  return `${r.status}: ${r.data || "no answer"}`;
}

// Resolves to null (cancelled), true, or the number typed when `number` is given.
function ask(text, { ok = "OK", danger = false, number = null, label = "" } = {}) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = ok;
  $("#confirm-ok").className = danger ? "danger" : "primary";
  const row = $("#confirm-input-row");
  const input = $("#confirm-input");
  row.hidden = number === null;
  if (number !== null) { input.value = number; $("#confirm-input-label").textContent = label; }
  return new Promise((resolve) => {
    d.onclose = () => {
      if (d.returnValue !== "ok") return resolve(null);
      if (number === null) return resolve(true);
      const n = Number(input.value);
      resolve(Number.isInteger(n) && n >= 0 ? n : null);
    };
    d.returnValue = "";
    d.showModal();
    (number !== null ? input : $("#confirm-cancel")).focus();
  });
}

async function act(what, method, path, body) {
  const r = await api(method, path, body);
  if (r.ok) flash(`${what}: done${r.data && r.data.deploymentId ? " (deployment " + r.data.deploymentId + ")" : ""}`);
  else flash(`${what} failed — ${errorText(r)}`, true);
  scheduleRefresh(0);
  return r;
}

const appActions = {
  async scale(app) {
    const n = await ask(`Scale ${app.id} to how many instances?`, { ok: "Scale", number: app.instances, label: "Instances" });
    if (n !== null) act(`Scale ${app.id} to ${n}`, "PUT", appPath(app.id), { instances: n });
  },
  async restart(app) {
    if (await ask(`Restart every task of ${app.id}?`, { ok: "Restart" })) act(`Restart ${app.id}`, "POST", appPath(app.id) + "/restart");
  },
  async suspend(app) {
    if (await ask(`Suspend ${app.id} (scale to 0 instances)?`, { ok: "Suspend" })) act(`Suspend ${app.id}`, "PUT", appPath(app.id), { instances: 0 });
  },
  async destroy(app) {
    // Marathon locks an app while a deployment runs; destroying it then must override that (force).
    const busy = (app.deployments || []).length > 0;
    const text = `Destroy ${app.id}? Its ${app.tasksRunning} running tasks are killed and its definition is deleted.` +
      (busy ? " A deployment of it is in flight: destroying cancels it." : "");
    if (await ask(text, { ok: "Destroy", danger: true })) {
      await act(`Destroy ${app.id}`, "DELETE", appPath(app.id) + (busy ? "?force=true" : ""));
      if (location.hash.startsWith("#/app/")) location.hash = "#/apps";
    }
  },
};

function actionButtons(app) {
  return h("span", { class: "row" },
    ["scale", "restart", "suspend", "destroy"].map((a) =>
      h("button", { class: "small" + (a === "destroy" ? " danger" : ""), "data-action": a, "data-app": app.id,
        onclick: () => appActions[a](app) }, a[0].toUpperCase() + a.slice(1))));
}

// ---- small views ------------------------------------------------------

function bar(label, used, total, unit) {
  const pct = total > 0 ? Math.min(100, (used / total) * 100) : 0;
  const cls = pct >= 95 ? "fill full" : pct >= 75 ? "fill high" : "fill";
  return h("div", { class: "bar", "data-resource": label },
    h("span", {}, label),
    h("div", { class: "track", role: "meter", "aria-label": label, "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": used },
      h("div", { class: cls, style: `width:${pct.toFixed(1)}%` })),
    h("span", { class: "val" }, `${fmtNum(used)} / ${fmtNum(total)}${unit ? " " + unit : ""}`));
}

function taskHealth(t, app) {
  if (!app.healthChecks || app.healthChecks.length === 0) return h("span", { class: "muted" }, "no checks");
  const r = t.healthCheckResults || [];
  if (r.length === 0) return h("span", { class: "badge" }, "unknown");
  return r.every((x) => x.alive) ? h("span", { class: "badge ok" }, "healthy") : h("span", { class: "badge bad" }, "unhealthy");
}

function stateBadge(s) {
  const cls = s === "TASK_RUNNING" ? "ok" : s === "TASK_STAGING" || s === "TASK_STARTING" ? "warn" : "bad";
  return h("span", { class: "badge " + cls }, s.replace("TASK_", "").toLowerCase());
}

function appStatus(app) {
  if ((app.deployments || []).length) return h("span", { class: "badge warn" }, "deploying");
  if (app.instances === 0) return h("span", { class: "badge" }, "suspended");
  if (app.tasksUnhealthy > 0) return h("span", { class: "badge bad" }, "unhealthy");
  if (app.healthChecks && app.healthChecks.length && app.tasksHealthy >= app.instances) return h("span", { class: "badge ok" }, "healthy");
  if (app.tasksRunning >= app.instances) return h("span", { class: "badge ok" }, "running");
  return h("span", { class: "badge warn" }, "waiting");
}

function deploymentStep(d) {
  const acts = (d.currentActions || []).map((a) => `${a.action} ${a.app}`).join(", ");
  return h("span", { class: "step" }, `step ${d.currentStep}/${d.totalSteps}: ${acts || "—"}`);
}

function nodeName(id) {
  const n = state.nodes.find((n) => n.id === id);
  return n ? h("span", { title: `${n.http} · id ${n.id}` }, n.hostname) : id;
}

// ---- pages ------------------------------------------------------------

const pages = {};

pages.cluster = () => {
  const head = h("p", { class: "muted", id: "cluster-head" });
  const grid = h("div", { class: "nodes", id: "nodes" });
  return {
    title: "Cluster",
    root: [h("h1", {}, "Cluster"), head, grid],
    update() {
      const r = state.raft;
      const leader = state.nodes.find((n) => n.leader);
      fill(head, `Raft leader: ${leader ? leader.hostname + " (" + leader.http + ")" : "none"} · term ${r.term ?? "?"} · ` +
        `this node: ${r.role || "?"}, applied index ${r.lastAppliedIndex ?? "?"} · ${plural(state.nodes.length, "node")}`);
      if (state.loaded && state.nodes.length === 0) return fill(grid, h("div", { class: "empty" }, "No nodes registered."));
      fill(grid, state.nodes.map((n) => {
        const status = n.status === "up" ? "ok" : n.status === "draining" ? "warn" : "bad";
        return h("section", { class: "node", "data-node": n.id, "aria-label": "node " + n.hostname },
          h("h3", {}, n.hostname,
            n.leader ? h("span", { class: "badge leader" }, "leader") : null,
            h("span", { class: "badge" }, n.role),
            h("span", { class: "badge " + status }, n.status)),
          h("div", { class: "meta" }, `${n.http} · rpc ${n.rpc} · id ${n.id} · ${n.tasks} tasks · ports ${n.ports} · drivers ${(n.drivers || []).join(", ")}`),
          bar("cpus", n.used.cpus, n.resources.cpus, ""),
          bar("mem", n.used.mem, n.resources.mem, "MB"),
          bar("disk", n.used.disk, n.resources.disk, "MB"),
          bar("ports", n.portsUsed, n.portsTotal, ""),
          n.resources.gpus > 0 ? bar("gpus", n.used.gpus, n.resources.gpus, "") : null,
          h("div", { class: "attrs" }, Object.entries(n.attributes || {}).map(([k, v]) => h("span", { class: "badge" }, `${k}: ${v}`))));
      }));
    },
  };
};

const EXAMPLE = `{
  "id": "/web",
  "cmd": "exec python3 -m http.server $PORT0",
  "cpus": 0.1,
  "mem": 64,
  "instances": 1
}`;

// The JSON editor: create or update an app; the API's 422 details are shown
// beside the field they name.
function editor(initial, onDone) {
  const text = h("textarea", { id: "app-json", spellcheck: "false", "aria-label": "App definition (JSON)" });
  text.value = initial;
  const fields = h("div", { class: "fields", id: "app-fields", "aria-live": "polite" });
  const msg = h("div", { class: "form-message", id: "form-message", role: "status" });
  const submit = h("button", { class: "primary", id: "app-submit", type: "button" }, "Create or update");
  let errors = [];

  function showFields() {
    let def;
    try { def = JSON.parse(text.value); } catch (e) {
      return fill(fields, h("div", { class: "field invalid" }, h("span", { class: "field-error" }, "Not JSON yet: " + e.message)));
    }
    if (!def || typeof def !== "object" || Array.isArray(def)) return fill(fields, h("div", { class: "muted" }, "An app definition is a JSON object."));
    const byField = {};
    const general = [];
    for (const d of errors) {
      const top = (d.path || "").replace(/^\//, "").split(/[/(]/)[0];
      if (top && top in def) (byField[top] = byField[top] || []).push(d);
      else general.push(d);
    }
    fill(fields,
      general.map((d) => h("div", { class: "field invalid", "data-field": d.path || "/" },
        h("span", { class: "name" }, d.path || "/"), h("span", { class: "val" }, ""),
        (d.errors || []).map((e) => h("span", { class: "field-error" }, e)))),
      Object.entries(def).map(([k, v]) => {
        const errs = byField[k] || [];
        return h("div", { class: "field" + (errs.length ? " invalid" : ""), "data-field": k },
          h("span", { class: "name" }, k),
          h("span", { class: "val", title: JSON.stringify(v) }, JSON.stringify(v)),
          errs.flatMap((d) => (d.errors || []).map((e) =>
            h("span", { class: "field-error" }, (d.path !== "/" + k ? d.path + ": " : "") + e))));
      }));
  }

  text.addEventListener("input", () => { errors = []; showFields(); });
  text.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) submit.click(); });
  submit.addEventListener("click", async () => {
    let def;
    try { def = JSON.parse(text.value); } catch (e) {
      msg.className = "form-message error"; msg.textContent = "The definition is not valid JSON: " + e.message; return;
    }
    const id = typeof def.id === "string" ? "/" + def.id.replace(/^\/+/, "") : null;
    const exists = id && state.apps.some((a) => a.id === id);
    const r = exists ? await api("PUT", appPath(id), text.value) : await api("POST", "/v2/apps", text.value);
    if (r.ok) {
      errors = [];
      msg.className = "form-message"; msg.textContent = `${exists ? "Updated" : "Created"} ${id || ""}; deployment ${(r.data.deploymentId || (r.data.deployments || [{}])[0].id) || "started"}.`;
      showFields();
      scheduleRefresh(0);
      if (onDone) onDone(id);
    } else {
      errors = (r.data && r.data.details) || [];
      msg.className = "form-message error";
      msg.textContent = r.data && r.data.message ? `${r.status}: ${r.data.message}` : errorText(r);
      showFields();
    }
  });
  showFields();
  return {
    el: h("div", { class: "editor", id: "editor" },
      h("div", {}, h("label", { for: "app-json" }, "App definition (Marathon JSON) — ", h("span", { class: "muted" }, "Ctrl+Enter submits")),
        text, h("div", { class: "row" }, submit, msg)),
      h("div", {}, h("div", { class: "muted" }, "Fields"), fields)),
    focus: () => text.focus(),
  };
}

pages.apps = () => {
  const filter = h("input", { type: "search", id: "app-filter", placeholder: "Filter apps (/)", "aria-label": "Filter apps" });
  const edSlot = h("div", {});
  const body = h("div", { id: "apps" });
  let ed = null;
  const toggle = () => {
    if (ed) { edSlot.replaceChildren(); ed = null; return; }
    ed = editor(EXAMPLE); edSlot.append(ed.el); ed.focus();
  };
  const newButton = h("button", { class: "primary", id: "new-app", onclick: toggle }, "New app");
  filter.addEventListener("input", () => page.update());
  const page = {
    title: "Apps",
    root: [h("div", { class: "row" }, h("h1", {}, "Apps"), h("span", { class: "spacer" }), filter, newButton), edSlot, body],
    newApp() { if (!ed) toggle(); else ed.focus(); },
    closeEditor() { if (ed) toggle(); newButton.focus(); },
    focusFilter() { filter.focus(); },
    update() {
      const q = filter.value.trim().toLowerCase();
      const apps = state.apps.filter((a) => !q || a.id.toLowerCase().includes(q)).sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
      if (state.loaded && apps.length === 0) return fill(body, h("div", { class: "empty" }, q ? "No app matches." : "No apps yet. Press n to create one."));
      const rows = [];
      let shown = new Set();
      for (const a of apps) {
        const parts = a.id.split("/").filter(Boolean);
        for (let i = 1; i < parts.length; i++) {
          const g = "/" + parts.slice(0, i).join("/");
          if (!shown.has(g)) {
            shown.add(g);
            rows.push(h("tr", { class: "tree-group" }, h("td", { colspan: 7, style: `padding-left:${10 + (i - 1) * 18}px` }, g + "/")));
          }
        }
        const deps = state.deployments.filter((d) => d.affectedApps.includes(a.id));
        rows.push(h("tr", { "data-app": a.id },
          h("td", { style: `padding-left:${10 + (parts.length - 1) * 18}px` }, h("a", { href: "#/app" + a.id }, parts[parts.length - 1] || a.id)),
          h("td", {}, appStatus(a)),
          h("td", { class: "num" }, a.instances),
          h("td", { class: "counts" },
            h("span", { title: "running" }, `${a.tasksRunning} running`),
            (a.healthChecks || []).length ? [
              h("span", { title: "healthy", class: a.tasksHealthy ? "" : "muted" }, `${a.tasksHealthy} healthy`),
              h("span", { title: "unhealthy", class: a.tasksUnhealthy ? "badge bad" : "muted" }, `${a.tasksUnhealthy} unhealthy`),
            ] : h("span", { class: "muted" }, "no health checks"),
            h("span", { title: "staged", class: a.tasksStaged ? "" : "muted" }, `${a.tasksStaged} staged`)),
          h("td", {}, `${a.cpus} cpu · ${a.mem} MB`),
          h("td", {}, deps.length ? deps.map(deploymentStep) : h("span", { class: "muted" }, "—")),
          h("td", {}, actionButtons(a))));
      }
      fill(body, h("table", {},
        h("thead", {}, h("tr", {}, ["App", "Status", "Instances", "Tasks", "Resources", "Deployment", ""].map((c) =>
          h("th", { class: c === "Instances" ? "num" : "" }, c)))),
        h("tbody", {}, rows)));
    },
  };
  return page;
};

// A line diff (LCS) of two pretty-printed definitions.
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const m = x.length, n = y.length;
  const dp = Array.from({ length: m + 1 }, () => new Array(n + 1).fill(0));
  for (let i = m - 1; i >= 0; i--) for (let j = n - 1; j >= 0; j--)
    dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < m && j < n) {
    if (x[i] === y[j]) { out.push(["same", x[i]]); i++; j++; }
    else if (dp[i + 1][j] >= dp[i][j + 1]) out.push(["del", x[i++]]);
    else out.push(["add", y[j++]]);
  }
  while (i < m) out.push(["del", x[i++]]);
  while (j < n) out.push(["add", y[j++]]);
  return out;
}

// Only the changed lines and `n` lines around them; the rest folded into one line.
function withContext(lines, n) {
  const near = lines.map(() => false);
  lines.forEach(([k], i) => { if (k !== "same") for (let j = Math.max(0, i - n); j <= Math.min(lines.length - 1, i + n); j++) near[j] = true; });
  const out = [];
  let folded = 0;
  lines.forEach((l, i) => {
    if (near[i]) {
      if (folded) out.push(["same", `… ${folded} unchanged lines`]);
      folded = 0;
      out.push(l);
    } else folded++;
  });
  if (folded) out.push(["same", `… ${folded} unchanged lines`]);
  return out;
}

// What an event says about its subject, in a few words.
function eventDetail(d) {
  if (d.taskStatus) return `${d.taskId} ${d.taskStatus}${d.message ? ": " + d.message : ""}`;
  if (d.alive !== undefined) return `${d.taskId || d.instanceId} ${d.alive ? "healthy" : "unhealthy"}`;
  if (d.uri) return `${d.uri}`;
  if (d.plan) return `deployment ${d.plan.id}`;
  return d.id ? `deployment ${d.id}` : "";
}

// Fields that change with every write; a diff of them says nothing.
const stripVolatile = (def) => {
  const d = { ...def };
  ["version", "versionInfo", "tasks", "deployments", "tasksRunning", "tasksHealthy", "tasksUnhealthy", "tasksStaged", "lastTaskFailure"].forEach((k) => delete d[k]);
  return JSON.stringify(d, null, 2);
};

// A task's stdout or stderr: its last lines, then what it writes, streamed
// by any node from the node that runs it (`/wharf/v1/tasks/{id}/logs`,
// open until the task has ended).
const LOG_TAIL = 1000;
function logView() {
  const pre = h("pre", { class: "logs", id: "task-log", tabindex: "0", "aria-label": "Task output" }, "Pick a task's stdout or stderr above.");
  const title = h("h2", { id: "log-title" }, "Task output");
  let abort = null;
  function stop() { if (abort) abort.abort(); abort = null; }
  async function open(taskId, stream) {
    stop();
    const mine = new AbortController();
    abort = mine;
    fill(title, `${stream} of ${taskId}`);
    pre.textContent = "";
    delete pre.dataset.ended;
    const append = (text) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += text;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    };
    try {
      const r = await fetch(`/wharf/v1/tasks/${encodeURIComponent(taskId)}/logs?stream=${stream}&follow=true&tail=${LOG_TAIL}`, { signal: mine.signal, headers: auth ? { Authorization: auth, "X-Wharf-UI": "1" } : { "X-Wharf-UI": "1" } });
      if (!r.ok) { append(`[${r.status}: ${await r.text()}]\n`); return; }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        append(decoder.decode(value, { stream: true }));
      }
      append(decoder.decode());
      if (abort === mine) pre.dataset.ended = "true";
    } catch (e) {
      if (!mine.signal.aborted) append(`\n[${e}]\n`);
    }
  }
  return { el: h("div", {}, title, pre), open, stop };
}

pages.app = (id) => {
  const head = h("div", { class: "row", id: "app-head" });
  const info = h("p", { class: "muted", id: "app-info" });
  const tasks = h("div", { id: "app-tasks" });
  const failure = h("div", { id: "app-failure" });
  const deps = h("div", { id: "app-deployments" });
  const versions = h("div", { id: "app-versions" });
  const diff = h("div", { id: "app-diff" });
  const events = h("div", { id: "app-events", class: "events" });
  const logs = logView();
  const edSlot = h("div", {});
  let versionsFor = null;

  async function loadVersions(app) {
    versionsFor = app.version;
    const r = await api("GET", appPath(id) + "/versions");
    if (!r.ok) return fill(versions, h("div", { class: "empty" }, errorText(r)));
    const list = r.data.versions || [];
    fill(versions, h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "Version"), h("th", {}, ""))),
      h("tbody", {}, list.map((v) => h("tr", { "data-version": v },
        h("td", {}, fmtTime(v), v === app.version ? h("span", { class: "badge ok", style: "margin-left:6px" }, "current") : null),
        h("td", { class: "actions" },
          h("button", { class: "small", onclick: () => showDiff(v) }, "Diff with current"),
          v === app.version ? null : h("button", { class: "small", onclick: async () => {
            if (await ask(`Roll ${id} back to the version of ${fmtTime(v)}? This starts a deployment.`, { ok: "Roll back" }))
              act(`Roll back ${id}`, "PUT", appPath(id), { version: v });
          } }, "Roll back")))))));
  }

  async function showDiff(v) {
    const app = state.apps.find((a) => a.id === id);
    const r = await api("GET", appPath(id) + "/versions/" + encodeURIComponent(v));
    if (!r.ok || !app) return fill(diff, h("div", { class: "empty" }, errorText(r)));
    const lines = diffLines(stripVolatile(r.data), stripVolatile(app));
    const changed = lines.some(([k]) => k !== "same");
    fill(diff, h("h2", {}, `${fmtTime(v)} → current`),
      changed ? h("pre", { class: "diff" }, withContext(lines, 3).map(([k, l]) =>
        h("span", { class: k }, (k === "add" ? "+ " : k === "del" ? "- " : "  ") + l)))
        : h("div", { class: "empty" }, "No differences in the definition."));
  }

  const edit = h("button", { id: "edit-app", onclick: () => {
    if (edSlot.firstChild) return edSlot.replaceChildren();
    const app = state.apps.find((a) => a.id === id);
    if (!app) return;
    const def = JSON.parse(stripVolatile(app));
    delete def.ports; // portDefinitions says it
    const ed = editor(JSON.stringify(def, null, 2));
    edSlot.append(ed.el); ed.focus();
  } }, "Edit JSON");

  return {
    title: "App " + id,
    root: [head, info, edSlot, h("h2", {}, "Tasks"), tasks, failure, h("h2", {}, "Deployments"), deps,
      logs.el, h("h2", {}, "Versions"), versions, diff, h("h2", {}, "Recent events"), events],
    leave: () => logs.stop(),
    update() {
      const app = state.apps.find((a) => a.id === id);
      if (!app) {
        fill(head, h("h1", {}, id));
        fill(info, state.loaded ? "No such app (it may have been destroyed)." : "Loading…");
        return;
      }
      fill(head, h("h1", {}, app.id), appStatus(app), h("span", { class: "spacer" }), edit, actionButtons(app));
      fill(info, `${plural(app.instances, "instance")} · ${app.tasksRunning} running · ${app.tasksHealthy} healthy · ` +
        `${app.tasksUnhealthy} unhealthy · ${app.tasksStaged} staged · ${app.cpus} cpu · ${app.mem} MB · ` +
        `cmd: ${app.cmd || (app.args || []).join(" ") || "—"} · version ${fmtTime(app.version)}`);
      const ts = (app.tasks || []).slice().sort((a, b) => a.id.localeCompare(b.id, undefined, { numeric: true }));
      fill(tasks, ts.length === 0 ? h("div", { class: "empty" }, "No tasks.") : h("table", {},
        h("thead", {}, h("tr", {}, ["Task", "State", "Health", "Node", "Host ports", "Version", "Started", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, ts.map((t) => h("tr", { "data-task": t.id },
          h("td", { class: "mono" }, t.id),
          h("td", {}, stateBadge(t.state)),
          h("td", { class: "health" }, taskHealth(t, app)),
          h("td", {}, nodeName(t.slaveId)),
          h("td", { class: "mono" }, (t.ports || []).map((p) => `${t.host}:${p}`).join(" ") || "—"),
          // A scale makes a new version but keeps the config: only a config change makes a task old.
          h("td", {}, fmtTime(t.version), t.version < ((app.versionInfo || {}).lastConfigChangeAt || app.version) ?
            h("span", { class: "badge warn", style: "margin-left:4px", title: "launched from an older configuration" }, "old") : null),
          h("td", {}, fmtTime(t.startedAt || t.stagedAt)),
          h("td", { class: "actions" },
            h("button", { class: "small", "data-log": "stdout", onclick: () => logs.open(t.id, "stdout") }, "stdout"),
            h("button", { class: "small", "data-log": "stderr", onclick: () => logs.open(t.id, "stderr") }, "stderr"),
            h("button", { class: "small danger", "data-kill": t.id, onclick: async () => {
              if (await ask(`Kill task ${t.id}? The app keeps its instance count, so a replacement starts.`, { ok: "Kill", danger: true }))
                act("Kill task", "DELETE", `${appPath(id)}/tasks/${encodeURIComponent(t.id)}`);
            } }, "Kill")))))));
      const f = app.lastTaskFailure;
      // The sandbox outlives the task, so its output can still be read.
      fill(failure, f ? h("p", { class: "row" }, h("span", { class: "form-message error" },
        `Last failure: ${f.state} of ${f.taskId} at ${fmtTime(f.timestamp)} on ${f.host}: ${f.message || "no message"}`),
        h("button", { class: "small", "data-failure-log": "stdout", onclick: () => logs.open(f.taskId, "stdout") }, "stdout"),
        h("button", { class: "small", "data-failure-log": "stderr", onclick: () => logs.open(f.taskId, "stderr") }, "stderr")) : null);
      const ds = state.deployments.filter((d) => d.affectedApps.includes(id));
      fill(deps, ds.length === 0 ? h("div", { class: "empty" }, "None in flight.") : ds.map((d) =>
        h("div", { class: "row" }, h("code", {}, d.id), deploymentStep(d))));
      if (versionsFor !== app.version) loadVersions(app);
      const mine = state.events.filter((e) => e.data.appId === id || (e.data.plan && JSON.stringify(e.data.plan.target || {}).includes(`"${id}"`)) ||
        (e.data.appDefinition && e.data.appDefinition.id === id)).slice(-30).reverse();
      fill(events, mine.length === 0 ? h("div", { class: "empty" }, "No events for this app since the page was opened.") :
        h("table", {}, h("tbody", {}, mine.map((e) => h("tr", {},
          h("td", {}, fmtTime(e.at)), h("td", {}, e.kind),
          h("td", { class: "mono" }, eventDetail(e.data)))))));
    },
  };
};

pages.deployments = () => {
  const body = h("div", { id: "deployments" });
  return {
    title: "Deployments",
    root: [h("h1", {}, "Deployments"), body],
    update() {
      if (state.loaded && state.deployments.length === 0) return fill(body, h("div", { class: "empty" }, "No deployments in flight."));
      fill(body, h("table", {},
        h("thead", {}, h("tr", {}, ["Deployment", "Apps", "Step", "Current actions", "Waiting for", "Version", ""].map((c) => h("th", {}, c)))),
        h("tbody", {}, state.deployments.map((d) => h("tr", { "data-deployment": d.id },
          h("td", { class: "mono" }, d.id),
          h("td", {}, d.affectedApps.map((a) => h("div", {}, h("a", { href: "#/app" + a }, a)))),
          h("td", { class: "num" }, `${d.currentStep} / ${d.totalSteps}`),
          h("td", {}, (d.currentActions || []).map((a) => h("div", {}, `${a.action} ${a.app}`,
            (a.readinessCheckResults || []).length ? h("span", { class: "muted" }, ` (${a.readinessCheckResults.filter((r) => r.ready).length}/${a.readinessCheckResults.length} ready)`) : null))),
          // What holds it: the queue's reason for each app that lacks instances.
          h("td", { class: "waiting" }, state.queue.filter((q) => d.affectedApps.includes(q.app)).map((q) =>
            h("div", {}, `${q.app}: ${q.count} waiting — ${q.reason}`))),
          h("td", {}, fmtTime(d.version)),
          h("td", { class: "actions" },
            h("button", { class: "small", onclick: async () => {
              if (await ask(`Roll back deployment ${d.id}? The apps return to their versions before it.`, { ok: "Roll back" }))
                act("Roll back deployment", "DELETE", `/v2/deployments/${d.id}`);
            } }, "Roll back"),
            h("button", { class: "small danger", onclick: async () => {
              if (await ask(`Stop tracking deployment ${d.id} without rolling back (force)?`, { ok: "Forget", danger: true }))
                act("Forget deployment", "DELETE", `/v2/deployments/${d.id}?force=true`);
            } }, "Forget")))))));
    },
  };
};

pages.queue = () => {
  const body = h("div", { id: "queue" });
  return {
    title: "Queue",
    root: [h("h1", {}, "Queue"), h("p", { class: "muted" }, "Instances that wait to be launched, and why (the scheduler's reason, from this node's replica)."), body],
    update() {
      if (state.loaded && state.queue.length === 0) return fill(body, h("div", { class: "empty" }, "Nothing waits: every app has the instances it asks for."));
      fill(body, h("table", {},
        h("thead", {}, h("tr", {}, ["App", "Wants", "Waiting", "Why", "Declined by", ""].map((c) => h("th", { class: c === "Waiting" ? "num" : "" }, c)))),
        h("tbody", {}, state.queue.map((q) => h("tr", { "data-queued": q.app },
          h("td", {}, h("a", { href: "#/app" + q.app }, q.app)),
          h("td", {}, (() => { const a = state.apps.find((a) => a.id === q.app); return a ? `${a.cpus} cpu · ${a.mem} MB · ${a.disk} MB disk each` : ""; })()),
          h("td", { class: "num" }, q.count),
          h("td", {}, h("span", { class: "badge " + (q.waiting === "launching" ? "" : "warn") }, q.waiting), " ", q.reason,
            q.delayedUntil ? h("span", { class: "muted" }, ` (until ${fmtTime(q.delayedUntil)})`) : null),
          h("td", {}, Object.entries(q.declined || {}).map(([k, v]) => h("div", {}, `${k}: ${v}`))),
          h("td", {}, q.waiting === "backoff" ? h("button", { class: "small", onclick: () =>
            act(`Reset the delay of ${q.app}`, "DELETE", appPath(q.app).replace("/v2/apps", "/v2/queue") + "/delay") }, "Launch now") : null))))));
    },
  };
};

// ---- routing and keys ------------------------------------------------

let current = null;
function route() {
  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/cluster";
  let name, page;
  if (hash.startsWith("/app/")) { name = "apps"; page = pages.app(hash.slice(4)); }
  else {
    name = hash.slice(1);
    if (!pages[name] || name === "app") name = "cluster";
    page = pages[name]();
  }
  if (current && current.leave) current.leave();
  current = page;
  document.querySelectorAll(".top nav a").forEach((a) =>
    a.dataset.page === name ? a.setAttribute("aria-current", "page") : a.removeAttribute("aria-current"));
  document.title = page.title + " · Wharf";
  fill($("#view"), page.root);
  page.update();
  if (pending && page[pending]) page[pending]();
  pending = null;
}

// A key pressed on another page that the apps page carries out once shown.
let pending = null;
function onApps(what) {
  if (location.hash === "#/apps") return current[what] && current[what]();
  pending = what;
  location.hash = "#/apps";
}

document.addEventListener("keydown", (e) => {
  const t = e.target;
  const typing = t instanceof HTMLInputElement || t instanceof HTMLTextAreaElement || t.isContentEditable;
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $("#confirm").open) return;
  const go = { "1": "#/cluster", "2": "#/apps", "3": "#/deployments", "4": "#/queue" }[e.key];
  if (go) { location.hash = go; e.preventDefault(); }
  else if (e.key === "n") { e.preventDefault(); onApps("newApp"); }
  else if (e.key === "/") { e.preventDefault(); onApps("focusFilter"); }
  else if (e.key === "Escape" && current && current.closeEditor) current.closeEditor();
});

window.addEventListener("hashchange", route);
$("#login-form").addEventListener("submit", submitLogin);
$("#logout").addEventListener("click", () => { setAuth(null); location.reload(); });
setAuth(auth);
route();
refresh();
connect();
