// The console's only script: the live feed (server-sent events), pause/resume, the rate
// indicator, and revealing write keys. No framework, no build step.
"use strict";

function liveFeed(table) {
  const body = table.tBodies[0];
  const eventUrl = table.dataset.eventUrl;
  const pauseButton = document.getElementById("pause");
  const rate = document.getElementById("rate");
  const arrivals = []; // arrival times (ms) of events seen in the last 10 s
  const held = []; // events received while paused, shown on resume
  const MAX_ROWS = 500;
  let paused = false;
  let ended = false; // the server closed the stream for good

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  function show(e) {
    const tr = document.createElement("tr");
    tr.dataset.id = e.id;
    tr.className = "fresh";
    const link = document.createElement("a");
    link.href = eventUrl + e.id;
    link.textContent = e.id;
    const first = document.createElement("td");
    first.appendChild(link);
    tr.append(first, cell(e.received_at), cell(e.source), cell(e.type), cell(e.event),
              cell(e.user_id || e.anonymous_id), cell(e.message_id, "mono"));
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
    const empty = document.getElementById("empty");
    if (empty) empty.remove();
  }

  function tick() {
    if (ended) return;
    const now = Date.now();
    while (arrivals.length && arrivals[0] < now - 10000) arrivals.shift();
    rate.textContent = (arrivals.length / 10).toFixed(1) + " events/s" + (paused ? " (paused, " + held.length + " waiting)" : "");
  }
  setInterval(tick, 1000);

  const source = new EventSource(table.dataset.stream + (table.dataset.stream.includes("?") ? "&" : "?") + "after=" + table.dataset.after);
  source.addEventListener("events", (message) => {
    const rows = JSON.parse(message.data);
    const now = Date.now();
    for (const e of rows) {
      arrivals.push(now);
      if (paused) { held.push(e); if (held.length > MAX_ROWS) held.shift(); } else show(e);
    }
    tick();
  });
  source.onerror = () => {
    rate.classList.add("stale");
    // closed for good (e.g. 401: the session ended, idle or signed out elsewhere)
    if (source.readyState === EventSource.CLOSED) {
      ended = true;
      rate.textContent = "stream ended: reload the page";
    }
  };
  source.onopen = () => { rate.classList.remove("stale"); };

  pauseButton.addEventListener("click", () => {
    paused = !paused;
    pauseButton.textContent = paused ? "Resume" : "Pause";
    if (!paused) { for (const e of held.splice(0)) show(e); }
    tick();
  });
}

async function reveal(button) {
  const section = button.closest("section");
  const code = section.querySelector("code.key");
  const form = new FormData();
  form.append("csrf", document.body.dataset.csrf);
  const answer = await fetch(code.dataset.keyUrl, { method: "POST", body: form, credentials: "same-origin" });
  if (!answer.ok) { code.textContent = "cannot reveal (" + answer.status + ")"; return; }
  const key = (await answer.json()).write_key;
  code.textContent = key;
  for (const span of section.querySelectorAll("pre.snippet span.k")) span.textContent = key;
  button.remove();
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("events");
  if (table && table.dataset.stream) liveFeed(table);
  for (const button of document.querySelectorAll("button.reveal")) {
    button.addEventListener("click", () => reveal(button));
  }
});
