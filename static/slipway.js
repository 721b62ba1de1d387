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

// Live regions (issue 13): elements marked data-live="TOPIC …" (or a
// number: every topic) are refreshed when the server's event stream
// (GET /events, Server-Sent Events) says one of their topics changed: the
// page is fetched again and each region swapped for its fresh copy. At most
// one fetch is in flight; changes that arrive meanwhile cause one more.
// A region where the person is typing or has changed a field is left alone
// (a note offers to reload). When the stream breaks, the page polls slowly
// until it is back. Without JavaScript the pages are complete as served.
const LIVE_FALLBACK_MS = 10000;

function liveTopics(region) {
  const words = (region.dataset.live || "").split(/\s+/).filter((w) => /^[a-z]+$/.test(w));
  return words.length ? words : null; // null: every topic
}

function liveBusy(region) {
  if (region.dataset.dirty) { return true; }
  const active = document.activeElement;
  return !!(active && region.contains(active) && active.matches("input, textarea, select"));
}

function liveNote(region) {
  const id = region.id ? `live-note-${region.id}` : "live-note";
  if (document.getElementById(id)) { return; }
  const note = document.createElement("p");
  note.id = id;
  note.className = "live-note";
  note.setAttribute("role", "status");
  note.append("Newer information is available. ");
  const reload = document.createElement("a");
  reload.href = location.href;
  reload.textContent = "Reload the page";
  note.append(reload);
  note.append(" (your changes here would be lost).");
  region.before(note);
}

function liveRegions() {
  const regions = () => Array.from(document.querySelectorAll("[data-live]"));
  if (!regions().length || !window.fetch || !window.DOMParser) { return; }
  // A field changed by hand marks its region: it is not swapped any more.
  document.addEventListener("input", (e) => {
    const region = e.target.closest && e.target.closest("[data-live]");
    if (region) { region.dataset.dirty = "1"; }
  });
  const wanted = (topics) => regions().some((r) => {
    const mine = liveTopics(r);
    return !topics || !mine || mine.some((t) => topics.has(t));
  });

  // When the page last matched the server (performance.now() time; 0: the
  // navigation, before the server rendered the page).
  let syncedAt = 0;
  let inFlight = false;
  let queued = null; // topics waiting for the next fetch (null: none; "all")
  let missed = false; // a change arrived while the tab was hidden
  const want = (topics) => {
    if (topics === "all" || queued === "all") { queued = "all"; }
    else { queued = new Set([...(queued || []), ...topics]); }
  };

  async function refresh() {
    if (inFlight || queued === null) { return; }
    if (document.hidden) { missed = true; return; }
    const topics = queued === "all" ? null : queued;
    queued = null;
    if (!wanted(topics)) { return; }
    inFlight = true;
    syncedAt = performance.now();
    try {
      const res = await fetch(location.href, {
        headers: { "Accept": "text/html" }, credentials: "same-origin", cache: "no-store",
      });
      if (res.ok && new URL(res.url).pathname === location.pathname) {
        swap(new DOMParser().parseFromString(await res.text(), "text/html"));
      }
    } catch (e) { /* offline for a moment: the next change or poll tries again */ }
    inFlight = false;
    if (queued !== null) { setTimeout(refresh, 50); }
  }

  function swap(doc) {
    const mine = regions();
    const fresh = Array.from(doc.querySelectorAll("[data-live]"));
    const sameShape = mine.length === fresh.length
      && mine.every((r, i) => r.id === fresh[i].id);
    if (sameShape) {
      mine.forEach((region, i) => {
        if (region.innerHTML === fresh[i].innerHTML) { return; }
        if (liveBusy(region)) { liveNote(region); return; }
        region.replaceWith(document.importNode(fresh[i], true));
      });
    } else {
      // Regions came or went (a new pipeline, gate run, approval): the
      // whole content is swapped, unless someone is editing in it.
      const main = document.querySelector("main");
      const freshMain = doc.querySelector("main");
      if (!main || !freshMain) { return; }
      if (mine.some(liveBusy)) { liveNote(mine.find(liveBusy)); return; }
      main.replaceChildren(...Array.from(freshMain.childNodes).map((n) => document.importNode(n, true)));
    }
    // The navigation's count of approvals waiting.
    const count = document.querySelector(".nav-approvals");
    const freshCount = doc.querySelector(".nav-approvals");
    if (count && freshCount && count.textContent !== freshCount.textContent) {
      count.textContent = freshCount.textContent;
    }
    document.dispatchEvent(new CustomEvent("slipway:live"));
  }

  window.slipway.refresh = () => { want("all"); refresh(); };

  // The stream, and the slow poll while it is down.
  // <html data-live-state="connected|polling"> says how the page is kept
  // up to date (for styles and tests).
  const state = (s) => { document.documentElement.dataset.liveState = s; };
  let poll = null;
  const startPolling = () => {
    state("polling");
    if (poll) { return; }
    poll = setInterval(() => { want("all"); refresh(); }, LIVE_FALLBACK_MS);
  };
  const stopPolling = () => { if (poll) { clearInterval(poll); poll = null; } };
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && missed) { missed = false; want("all"); refresh(); }
  });
  if (!window.EventSource) { startPolling(); return; }
  let source = null;
  const connect = () => {
    source = new EventSource("/events");
    source.addEventListener("hello", (e) => {
      stopPolling();
      state("connected");
      // A change since the page last matched the server may have come
      // while no stream was open (before the first, between reconnects):
      // refresh once then.
      let since = null;
      try { since = JSON.parse(e.data).ms_since_change; } catch (err) { since = null; }
      if (typeof since === "number" && performance.now() - since >= syncedAt - 1000) {
        want("all"); refresh();
      }
    });
    source.addEventListener("message", (e) => {
      syncedAt = performance.now(); // this change is handled below
      try {
        const change = JSON.parse(e.data);
        want(Array.isArray(change.topics) ? change.topics : "all");
      } catch (err) { want("all"); }
      refresh();
    });
    source.addEventListener("error", () => {
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        // Refused (signed out, too many tabs, server stopping): try later.
        setTimeout(connect, 3 * LIVE_FALLBACK_MS);
      }
    });
  };
  connect();
  window.addEventListener("pagehide", () => { if (source) { source.close(); } });
}

// Countdowns: <span data-countdown="SECONDS-SINCE-EPOCH"> shows the time
// left until then ("4m 5s"), every second, as the page left it otherwise.
function countdowns() {
  const format = (s) => {
    if (s <= 0) { return "—"; }
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) { return `${h}h ${m}m`; }
    if (m > 0) { return `${m}m ${r}s`; }
    return `${r}s`;
  };
  setInterval(() => {
    document.querySelectorAll("[data-countdown]").forEach((el) => {
      const until = parseInt(el.dataset.countdown, 10);
      if (!until) { return; }
      el.textContent = format(Math.round(until - Date.now() / 1000));
    });
  }, 1000);
}

// A running build's or deployment's log: append new lines as they arrive.
// The element is looked up on every tick, since a live refresh may swap it
// for a fresh copy (which carries the lines up to its data-after). At the
// end, or when a task appears that the page does not show yet, a live page
// refreshes its regions; a page without live regions reloads.
function tailLog() {
  const current = () => {
    const log = document.getElementById("build-log");
    return log && log.dataset.logUrl ? log : null;
  };
  const again = () => {
    if (window.slipway.refresh) { window.slipway.refresh(); return true; }
    location.reload();
    return false;
  };
  if (!current()) { return; }
  const tick = async () => {
    const log = current();
    if (!log) { return; }
    try {
      const res = await api("GET", `${log.dataset.logUrl}?after=${parseInt(log.dataset.after, 10) || 0}`);
      if (res.ok) {
        const body = await res.json();
        for (const chunk of body.chunks || []) {
          const now = current();
          if (!now) { return; }
          if (chunk.seq <= (parseInt(now.dataset.after, 10) || 0)) { continue; }
          const pre = now.querySelector(`pre[data-task="${chunk.task_position}"]`);
          if (!pre) { if (!again()) { return; } break; }
          for (const line of chunk.text.replace(/\n$/, "").split("\n")) {
            const span = document.createElement("span");
            span.className = `log-${chunk.stream}`;
            span.textContent = line;
            pre.appendChild(span);
            pre.appendChild(document.createTextNode("\n"));
          }
          now.dataset.after = String(chunk.seq);
        }
        if (body.finished) { again(); return; }
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
  countdowns();
  tailLog();
  focusAnswer();
});
