// The status page: polls /status.json every 2 s and redraws. Plain DOM, no framework, no build.
"use strict";

const REFRESH_MS = 2000;
// A partition is flagged once its oldest pending event is this old: a few records pending
// between two commits is normal flow, not lag.
const LAG_WARN_S = 10;
const $ = (id) => document.getElementById(id);

function fmtRate(x) {
  if (x === null || x === undefined) return "–";
  return x >= 100 ? Math.round(x).toLocaleString("en") : x.toFixed(1);
}

function fmtSeconds(x) {
  if (x === null || x === undefined) return "?";
  if (x < 60) return x.toFixed(1) + " s";
  if (x < 3600) return (x / 60).toFixed(1) + " min";
  return (x / 3600).toFixed(1) + " h";
}

function fmtTime(ms) {
  return new Date(ms).toLocaleTimeString("en-GB", { hour12: false });
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function drawPopulations(pop, model) {
  const box = $("populations");
  box.replaceChildren();
  const segments = pop.segments || [];
  const max = Math.max(1, ...segments.map((s) => s.users));
  for (const s of segments) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.segment = String(s.segment);
    const label = document.createElement("span");
    label.textContent = "segment " + s.segment;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = ((100 * s.users) / max).toFixed(1) + "%";
    track.appendChild(fill);
    const count = document.createElement("span");
    count.className = "count";
    count.textContent = s.users.toLocaleString("en");
    bar.append(label, track, count);
    box.appendChild(bar);
  }
  const notes = [];
  if (pop.error) notes.push(pop.error);
  if (model.error) notes.push("no model: " + model.error);
  if (pop.unassigned !== null && pop.unassigned !== undefined)
    notes.push(pop.unassigned.toLocaleString("en") + " users not assignable yet");
  if (pop.other_versions) notes.push(pop.other_versions.toLocaleString("en") + " still under an older model");
  if (pop.counted_at) notes.push("counted at " + fmtTime(pop.counted_at * 1000));
  $("pop-note").textContent = notes.join(" · ");
}

function drawChanges(changes) {
  const body = $("changes").tBodies[0];
  body.replaceChildren();
  for (const c of changes.latest) {
    const row = body.insertRow();
    cell(row, fmtTime(c.published_ms));
    cell(row, String(c.user_id), "num");
    cell(row, (c.previous_segment === null ? "new" : c.previous_segment) + " → " +
      (c.segment === null ? "none" : c.segment));
    cell(row, c.model_version);
    cell(row, c.occurred_at);
  }
  $("changes-note").textContent = changes.latest.length
    ? ""
    : changes.error || "no segment change published yet";
}

function drawLag(lag) {
  // Figures of a broker that stopped answering are history, not the current lag.
  const known = lag.total !== null && !lag.error;
  $("lag-total").textContent = known ? lag.total.toLocaleString("en") : "–";
  $("lag-seconds").textContent = known ? fmtSeconds(lag.max_seconds_behind) : "–";
  const members = lag.members === null || lag.members === undefined
    ? "workers: –"
    : lag.members + (lag.members === 1 ? " worker" : " workers");
  $("lag-group").textContent = "group " + lag.group + " · " + members;
  const body = $("lag").tBodies[0];
  body.replaceChildren();
  for (const p of lag.partitions) {
    const row = body.insertRow();
    if (p.lag > 0 && (p.seconds_behind === null || p.seconds_behind >= LAG_WARN_S))
      row.className = "lagging";
    cell(row, p.topic);
    cell(row, String(p.partition), "num");
    cell(row, p.committed === null ? "none" : String(p.committed), "num");
    cell(row, String(p.end), "num");
    cell(row, String(p.lag), "num");
    cell(row, fmtSeconds(p.seconds_behind), "num");
  }
  const notes = [];
  if (lag.error) {
    notes.push("Kafka: " + lag.error);
    if (lag.taken_at) notes.push("table as of " + fmtTime(lag.taken_at * 1000));
  }
  if (lag.missing_topics.length) notes.push("topics not created yet: " + lag.missing_topics.join(", "));
  $("lag-note").textContent = notes.join(" · ");
}

// Present only when a supervisor serves the page (segstream worker --processes N): one row
// per worker process.
function drawProcesses(processes) {
  const section = $("processes-section");
  section.hidden = !processes;
  if (!processes) return;
  const body = $("processes").tBodies[0];
  body.replaceChildren();
  for (const p of processes) {
    const row = body.insertRow();
    if (!p.ready) row.className = "lagging";
    const own = p.this_process || {};
    cell(row, String(p.process), "num");
    cell(row, p.pid === null ? "–" : String(p.pid), "num");
    cell(row, p.state + (p.last_exit === null ? "" : " (last exit " + p.last_exit + ")"));
    cell(row, String(p.restarts), "num");
    cell(row, fmtRate(own.events_per_s), "num");
    cell(row, own.events_total === undefined ? "–" : own.events_total.toLocaleString("en"), "num");
    cell(row, p.ready ? "yes" : "no: " + p.reasons.join("; "));
  }
}

// Delivery (present only when SEGSTREAM_DELIVERY_CONFIG is set): one row per destination,
// flagged when the server found a reason to look (warnings), figures from Kafka.
function drawDelivery(delivery) {
  const section = $("delivery");
  if (!delivery) {
    section.hidden = true;
    return;
  }
  section.hidden = false;
  const letters = delivery.dead_letters;
  const body = $("delivery-table").tBodies[0];
  body.replaceChildren();
  for (const d of delivery.destinations) {
    const row = body.insertRow();
    row.dataset.destination = d.name;
    if (d.state === "warning") row.className = "lagging";
    cell(row, d.name).title = "consumer group " + d.group;
    cell(row, d.members === null ? "–" : String(d.members), "num");
    cell(row, d.backlog === null ? "–" : d.backlog.toLocaleString("en"), "num");
    cell(row, d.backlog === null ? "–" : fmtSeconds(d.seconds_behind), "num");
    cell(row, d.growth === null ? "–" : (d.growth > 0 ? "+" : "") + d.growth, "num");
    cell(row, d.dead_letters === null ? "–" : d.dead_letters.toLocaleString("en") +
      (letters.complete ? "" : "+"), "num");
    cell(row, d.warnings.length ? d.warnings.join("; ") : d.state);
  }
  const notes = [];
  if (delivery.error) notes.push("Kafka or config: " + delivery.error);
  if (letters.waiting !== null)
    notes.push(letters.waiting.toLocaleString("en") + " dead letters waiting on " + letters.topic +
      (letters.waiting ? " (segstream deliver --redrive sends them again)" : ""));
  notes.push("config " + delivery.config);
  $("delivery-note").textContent = notes.join(" · ");
}

function drawHealth(health) {
  const banner = $("health");
  if (health.ready) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  const title = document.createElement("div");
  title.textContent = "Not ready: figures below may be stale or missing (/readyz answers 503)";
  const list = document.createElement("ul");
  for (const [name, check] of Object.entries(health.checks)) {
    if (check.ok) continue;
    const item = document.createElement("li");
    item.dataset.check = name;
    item.textContent = name[0].toUpperCase() + name.slice(1) + ": " + check.detail;
    list.appendChild(item);
  }
  banner.replaceChildren(title, list);
  banner.hidden = false;
}

function draw(status) {
  drawHealth(status.health);
  $("model").textContent = "model: " + (status.model.version || "none") +
    (status.model.k ? " (k=" + status.model.k + ")" : "");
  const t = status.throughput;
  $("processed").textContent = fmtRate(t.processed_per_s);
  $("produced").textContent = fmtRate(t.produced_per_s);
  $("changes-rate").textContent = fmtRate(t.changes_per_s);
  drawLag(status.lag);
  drawProcesses(status.processes);
  drawDelivery(status.delivery);
  drawPopulations(status.populations, status.model);
  drawChanges(status.changes);
  $("updated").textContent = "updated " + fmtTime(status.generated_at * 1000);
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

// With SEGSTREAM_HTTP_TOKEN set, /status.json needs "Authorization: Bearer <token>". The page
// itself is served without it; the token typed into the form is kept in this tab's
// sessionStorage (gone when the tab closes, never in a cookie or the URL).
const TOKEN_KEY = "segstream.token";

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

function askForToken(wrong) {
  const form = $("token-form");
  form.hidden = false;
  $("token-hint").textContent = wrong
    ? "the token was refused: enter SEGSTREAM_HTTP_TOKEN again"
    : "this worker needs its SEGSTREAM_HTTP_TOKEN";
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
});

async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store", headers: authHeaders() });
    if (response.status === 401) {
      askForToken(sessionStorage.getItem(TOKEN_KEY) !== null);
      throw new Error("a token is required");
    }
    if (!response.ok) throw new Error("HTTP " + response.status);
    draw(await response.json());
    $("offline").hidden = true;
  } catch (err) {
    $("offline").hidden = false;
    $("offline").textContent = "status unavailable: " + err.message;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();
