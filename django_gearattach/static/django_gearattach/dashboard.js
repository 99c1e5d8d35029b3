/* django-gearattach admin dashboard: swap in the panels the server pushes.
 *
 * The server renders every panel (SVG included); this script only replaces them. It
 * follows a websocket (ws/gearattach/dashboard/), retries with backoff, and after three
 * failed attempts asks the page's ?panels=1 URL instead, every refresh interval.
 */
(function () {
  "use strict";
  var root = document.querySelector("[data-gearattach-dashboard]");
  if (!root) return;
  var refreshMs = Math.max(1000, parseFloat(root.dataset.refresh || "5") * 1000);
  var state = root.querySelector(".gearattach-live-state");
  var failures = 0;

  function show(message) {
    if (message.type !== "dashboard") return;
    Object.keys(message.panels).forEach(function (name) {
      var panel = root.querySelector('[data-panel="' + name + '"]');
      if (panel) panel.innerHTML = message.panels[name];
    });
    root.dataset.updated = message.at;
    root.dataset.updates = String(parseInt(root.dataset.updates || "0", 10) + 1);
    if (state) {
      // The page's own words (data-live-text, in its language), the time in the browser's.
      var text = root.dataset.liveText || "Live: updated %(time)s";
      state.textContent = text.replace("%(time)s", new Date(message.at).toLocaleTimeString());
    }
  }

  function poll() {
    root.dataset.state = "poll";
    fetch(root.dataset.pollUrl, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (message) { if (message) show(message); })
      .catch(function () {})
      .then(function () { window.setTimeout(poll, refreshMs); });
  }

  function connect() {
    if (!("WebSocket" in window)) return poll();
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    var socket = new WebSocket(scheme + "//" + window.location.host + root.dataset.wsUrl);
    var delivered = false;
    socket.onmessage = function (event) {
      delivered = true;
      failures = 0;
      root.dataset.state = "ws";
      try { show(JSON.parse(event.data)); } catch (e) { /* not for us */ }
    };
    socket.onclose = function (event) {
      if (event.code === 4403) {
        if (state) state.textContent = root.dataset.refusedText || "Not live: you may not follow the dashboard.";
        return;
      }
      if (!delivered) failures += 1;
      if (failures >= 3) return poll();
      var delay = Math.min(15000, 500 * Math.pow(2, failures)) * (0.5 + Math.random() / 2);
      window.setTimeout(connect, delay);
    };
  }

  connect();
})();
