// Slipway: small progressive enhancement. Every page works without it.
"use strict";

// Calls the JSON API with the session cookie: a state-changing call carries
// the session's CSRF token (from <meta name="csrf-token">) in X-CSRF-Token,
// without which Slipway refuses it (403), and a body is sent as JSON.
async function api(method, url, body) {
  const headers = { "Accept": "application/json" };
  const meta = document.querySelector('meta[name="csrf-token"]');
  if (method !== "GET" && meta) { headers["X-CSRF-Token"] = meta.content; }
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(url, init);
}
window.slipway = { api };

// Regions marked data-live="N" refresh every N seconds while they are live:
// the page is fetched again and the region swapped in place.
function liveRegions() {
  const regions = document.querySelectorAll("[data-live]");
  regions.forEach((region, index) => {
    const seconds = Math.max(2, parseInt(region.dataset.live, 10) || 5);
    const tick = async () => {
      if (document.hidden) { return schedule(); }
      try {
        const res = await fetch(location.href, { headers: { "Accept": "text/html" } });
        if (!res.ok) { return schedule(); }
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        // A region with an id is matched by it (regions come and go, so
        // their order on the fresh page may differ); others by position.
        const fresh = (region.id && doc.getElementById(region.id))
          || doc.querySelectorAll("[data-live]")[index]
          || doc.querySelectorAll("main > div")[index];
        if (fresh) {
          region.replaceWith(fresh);
          region = fresh;
          if (!fresh.hasAttribute("data-live")) { return; }
        }
      } catch (e) { /* offline for a moment: try again */ }
      schedule();
    };
    const schedule = () => setTimeout(tick, seconds * 1000);
    schedule();
  });
}

// A running build's log: append new lines as they arrive, reload at the end.
function tailLog() {
  const log = document.getElementById("build-log");
  if (!log || !log.dataset.logUrl) { return; }
  let after = parseInt(log.dataset.after, 10) || 0;
  const tick = async () => {
    try {
      const res = await api("GET", `${log.dataset.logUrl}?after=${after}`);
      if (res.ok) {
        const body = await res.json();
        for (const chunk of body.chunks || []) {
          const pre = log.querySelector(`pre[data-task="${chunk.task_position}"]`);
          if (!pre) { location.reload(); return; }
          for (const line of chunk.text.replace(/\n$/, "").split("\n")) {
            const span = document.createElement("span");
            span.className = `log-${chunk.stream}`;
            span.textContent = line;
            pre.appendChild(span);
            pre.appendChild(document.createTextNode("\n"));
          }
          after = Math.max(after, chunk.seq);
        }
        if (body.finished) { location.reload(); return; }
      }
    } catch (e) { /* try again */ }
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}

// A form answered into a section of the page (the stage form's Preview
// posts to …#preview): the browser scrolls there; move the keyboard focus
// there too, so the result is read out and Tab continues from it.
function focusAnswer() {
  if (!location.hash) { return; }
  const target = document.getElementById(location.hash.slice(1));
  if (target && target.tabIndex === -1 && target.hasAttribute("tabindex")) { target.focus(); }
}

document.addEventListener("DOMContentLoaded", () => {
  liveRegions();
  tailLog();
  focusAnswer();
});
