// autobump dashboard: keeps the page current without reloading it (served from
// /assets/, the only script the Content-Security-Policy allows; no dependencies).
// Every 5 s it asks the JSON API whether the page's revision is still current (an
// If-None-Match answered 304 without a body); when it changed, it fetches the page
// again and swaps in its <main>. Countdowns tick every second.
"use strict";
(function () {
  var POLL_MS = 5000;
  var body = document.body;
  var api = body.getAttribute("data-api");
  var stamp = document.getElementById("refreshed");
  var lastOk = Date.now();

  function human(seconds) {
    var s = Math.max(0, Math.round(seconds));
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return h > 0 ? d + "d" + h + "h" : d + "d";
    if (h > 0) return m > 0 ? h + "h" + m + "m" : h + "h";
    if (m > 0) return m + "m" + (s % 60 > 0 && m < 10 ? (s % 60) + "s" : "");
    return s + "s";
  }

  function tick() {
    var now = Date.now();
    var cells = document.querySelectorAll(".countdown[data-ends-at]");
    for (var i = 0; i < cells.length; i++) {
      var left = (Date.parse(cells[i].getAttribute("data-ends-at")) - now) / 1000;
      cells[i].textContent = left > 0 ? human(left) + " left" : "baked, promoting";
    }
    if (stamp) {
      var age = (now - lastOk) / 1000;
      stamp.textContent = age > 3 * POLL_MS / 1000
        ? "not updated for " + human(age) + " (retrying)"
        : "live · updated " + human(age) + " ago";
      stamp.className = age > 3 * POLL_MS / 1000 ? "stale" : "live";
    }
  }

  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("main");
    var main = document.getElementById("main");
    if (!fresh || !main) return;
    main.replaceWith(document.importNode(fresh, true));
    body.setAttribute("data-revision", doc.body.getAttribute("data-revision") || "");
  }

  function poll() {
    if (!api || document.hidden) return;
    // The revision as ETag: 304 (no body) while nothing changed.
    var etag = '"' + body.getAttribute("data-revision") + '"';
    fetch(api, { credentials: "same-origin", cache: "no-store",
                 headers: { Accept: "application/json", "If-None-Match": etag } })
      .then(function (r) {
        if (r.status === 304) { lastOk = Date.now(); return null; }
        if (!r.ok) throw new Error(r.status);
        lastOk = Date.now();
        return fetch(location.pathname, { credentials: "same-origin", cache: "no-store" })
          .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
          .then(swap);
      })
      .catch(function () { /* shown by tick() as "not updated for ..." */ });
  }

  setInterval(poll, POLL_MS);
  setInterval(tick, 1000);
  document.addEventListener("visibilitychange", poll);
  tick();
})();
