/* django-gearattach progress widget. No build step, no framework.
 *
 * Every element with [data-gearattach] follows one job: over a websocket first, then
 * Server-Sent Events, then long-polling (data-transports sets the order). Lost
 * connections are retried with exponential backoff and jitter; a transport that keeps
 * failing before it delivers anything gives way to the next one. Several widgets may
 * share a page. Each one dispatches "gearattach:message", "gearattach:complete" and
 * "gearattach:failed" events (bubbling, detail = the message); calling
 * preventDefault() on "gearattach:complete" stops the built-in outcome handling.
 *
 * A job that streams (job.stream() in the task) sends {"type": "chunk", "run": R,
 * "seq": N, "data": ...} messages: the widget appends each one's text to its
 * .gearattach-stream box as text (never as HTML; a value that is not a string is shown
 * as JSON) and dispatches "gearattach:chunk" first (preventDefault() to render it
 * yourself). {"type": "restart", "run": R} says the job runs again from the start: the
 * box is emptied, and "gearattach:restart" is dispatched. The widget remembers the last
 * chunk it holds ("R:N", seeded from data-stream-after when the page rendered the text
 * so far) and resumes after it whenever it reconnects, so no chunk shows twice.
 *
 * Every text it shows comes from the page (data-strings, rendered by the template tag
 * in the visitor's language); the English below is only a fallback.
 */
(function () {
  "use strict";

  if (window.GearAttach) {
    window.GearAttach.scan();
    return;
  }

  var FAILURES_BEFORE_FALLBACK = 3;
  var BACKOFF_BASE_MS = 500;
  var BACKOFF_MAX_MS = 15000;
  var PING_MS = 25000;
  var POLL_TIMEOUT_S = 25;
  var POSITION = /^\d{1,15}:\d{1,15}$/;

  function backoff(attempt) {
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * Math.pow(2, attempt));
    return delay * (0.5 + Math.random() / 2);
  }

  var FALLBACK = {
    waiting: "Waiting for the job to start…",
    working: "Working…",
    started: "Started",
    step: "Step %(numerator)s of %(denominator)s (%(percent)s%%)",
    fraction: "%(numerator)s of %(denominator)s",
    done: "Done.",
    doneShort: "Done",
    failed: "Failed.",
    stopped: "Stopped",
    jobFailed: "The job failed.",
    unserved: "No worker is running for %(function)s: the job starts when one does.",
    refused: "You cannot follow this job: the link is invalid, expired or not yours.",
    gone: "This job no longer exists.",
    unsupported: "This browser cannot follow the job; reload the page later.",
    download: "Download %(name)s",
    downloadResult: "Download the result",
    finishedPage: "The finished page",
    startingOver: "Starting over",
    superseded: "Starting over with the newer request…",
    errors: {}
  };

  /* "%(name)s" placeholders, as Django's interpolate() fills them; "%%" is a "%". */
  function format(text, values) {
    return text.replace(/%\(([a-z]+)\)s|%%/gi, function (match, name) {
      return name ? String(values[name]) : "%";
    });
  }

  /* ``url`` with ``name=value`` added to its query string. */
  function withParam(url, name, value) {
    if (!value) return url;
    return url + (url.indexOf("?") < 0 ? "?" : "&") + name + "=" + encodeURIComponent(value);
  }

  function wsUrl(path) {
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + path;
  }

  /* ``url`` as an absolute URL when it is an http(s) URL of this page's origin, else "". */
  function sameOrigin(url) {
    if (typeof url !== "string" || !url) return "";
    var parsed;
    try { parsed = new URL(url, window.location.href); } catch (e) { return ""; }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return "";
    return parsed.origin === window.location.origin ? parsed.href : "";
  }

  function Widget(el) {
    this.el = el;
    this.bar = el.querySelector(".gearattach-bar");
    this.fill = el.querySelector(".gearattach-fill");
    this.statusLine = el.querySelector(".gearattach-status");
    this.dataBox = el.querySelector(".gearattach-data");
    this.warnings = el.querySelector(".gearattach-warnings");
    this.outcome = el.querySelector(".gearattach-outcome");
    this.streamBox = el.querySelector(".gearattach-stream");
    // "R:N": the last chunk shown (run R, sequence number N); "" before any.
    this.position = POSITION.test(el.dataset.streamAfter || "") ? el.dataset.streamAfter : "";
    var strings = {};
    try { strings = JSON.parse(el.dataset.strings || "{}"); } catch (e) { strings = {}; }
    this.text = function (name, values) {
      var found = strings[name] || FALLBACK[name];
      return values ? format(found, values) : found;
    };
    this.errorText = function (error) {
      // The app's own failure texts arrive in English: show them in the page's language.
      return (strings.errors || {})[error] || error;
    };
    var supported = {
      ws: "WebSocket" in window,
      sse: "EventSource" in window,
      poll: "fetch" in window,
    };
    this.transports = (el.dataset.transports || "ws sse poll")
      .split(/\s+/)
      .filter(function (name) { return supported[name]; });
    this.index = 0;
    this.failures = 0;
    this.attempt = 0;
    this.done = false;
    this.cursor = "";
    this.connection = null;
    this.timer = null;
  }

  Widget.prototype.start = function () {
    var url = this.el.dataset.outcomeUrl;
    if (url && window.history && window.history.replaceState) {
      // Reloading the page now shows this job again instead of starting another.
      window.history.replaceState(window.history.state, "", url);
    }
    if (this.el.hasAttribute("data-finished")) {
      this.done = true;
      return;
    }
    this.connect();
  };

  Widget.prototype.transport = function () {
    return this.transports[this.index] || null;
  };

  Widget.prototype.connect = function () {
    this.timer = null;
    if (this.done) return;
    this.el.dataset.transport = this.transport() || "none";
    switch (this.transport()) {
      case "ws": return this.connectWebSocket();
      case "sse": return this.connectEventSource();
      case "poll": return this.poll();
      default: return this.fail(this.text("unsupported"));
    }
  };

  /* A connection ended without the outcome: retry, or fall back to the next transport. */
  Widget.prototype.retry = function (delivered) {
    if (this.done) return;
    this.connection = null;
    if (delivered) {
      this.failures = 0;
      this.attempt = 0;
    } else {
      this.failures += 1;
      if (this.failures >= FAILURES_BEFORE_FALLBACK && this.index < this.transports.length - 1) {
        this.index += 1;
        this.failures = 0;
        this.attempt = 0;
        return this.connect();
      }
    }
    var self = this;
    this.timer = window.setTimeout(function () { self.connect(); }, backoff(this.attempt++));
  };

  Widget.prototype.connectWebSocket = function () {
    var self = this;
    var delivered = false;
    var socket = new WebSocket(wsUrl(withParam(this.el.dataset.wsUrl, "after", this.position)));
    var ping = null;
    this.connection = socket;
    socket.onopen = function () {
      ping = window.setInterval(function () {
        if (socket.readyState === WebSocket.OPEN) socket.send('{"type":"ping"}');
      }, PING_MS);
    };
    socket.onmessage = function (event) {
      delivered = true;
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      self.handle(message);
    };
    socket.onclose = function (event) {
      if (ping) window.clearInterval(ping);
      if (self.done) return;
      if (event.code === 4403) return self.fail(self.text("refused"));
      if (event.code === 4404) return self.fail(self.text("gone"));
      self.retry(delivered);
    };
  };

  Widget.prototype.connectEventSource = function () {
    var self = this;
    var delivered = false;
    // Resuming after the last chunk shown: a new EventSource sends no Last-Event-ID.
    var source = new EventSource(withParam(this.el.dataset.eventsUrl, "after", this.position));
    this.connection = source;
    var receive = function (event) {
      delivered = true;
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      self.handle(message);
      if (self.done) source.close();
    };
    source.onmessage = receive;
    // A stream's chunks come as named events ("event: chunk", "id: R:N").
    source.addEventListener("chunk", receive);
    source.addEventListener("restart", receive);
    source.onerror = function () {
      source.close();
      if (self.done) return;
      if (!delivered && source.readyState === EventSource.CLOSED) {
        // Refused (an HTTP error) rather than dropped: long-polling says why, clearly.
        self.failures = FAILURES_BEFORE_FALLBACK - 1;
      }
      self.retry(delivered);
    };
  };

  Widget.prototype.poll = function () {
    var self = this;
    var url = this.el.dataset.pollUrl + "?timeout=" + POLL_TIMEOUT_S +
      (this.cursor ? "&cursor=" + encodeURIComponent(this.cursor) : "") +
      (this.position ? "&after=" + encodeURIComponent(this.position) : "");
    this.connection = { close: function () {} };
    window.fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(
          function (body) { return { status: response.status, body: body }; },
          function () { return { status: response.status, body: {} }; }
        );
      })
      .then(function (answer) {
        if (self.done) return;
        if (answer.status === 403) return self.fail(self.text("refused"));
        if (answer.status === 404) return self.fail(self.text("gone"));
        if (answer.status !== 200) {
          self.attempt = Math.max(self.attempt, 1);
          return self.retryPoll();
        }
        self.attempt = 0;
        self.cursor = answer.body.cursor || self.cursor;
        (answer.body.messages || []).forEach(function (m) { self.handle(m); });
        if (!self.done) self.poll();
      })
      .catch(function () { self.retryPoll(); });
  };

  Widget.prototype.retryPoll = function () {
    var self = this;
    if (this.done) return;
    this.timer = window.setTimeout(function () { self.poll(); }, backoff(this.attempt++));
  };

  Widget.prototype.emit = function (name, message) {
    var event = new CustomEvent("gearattach:" + name, { bubbles: true, cancelable: true, detail: message });
    return this.el.dispatchEvent(event);
  };

  Widget.prototype.handle = function (message) {
    if (this.done || !message || typeof message.type !== "string") return;
    this.emit("message", message);
    switch (message.type) {
      case "started": return this.started();
      case "unserved": return this.unserved(message.function);
      case "served": return this.served();
      case "status": return this.status(message.numerator, message.denominator);
      case "data": return this.data(message.data);
      case "chunk": return this.chunk(message);
      // Several chunks in one websocket frame: each one as if it came alone.
      case "chunks": return this.chunks(message.chunks);
      case "restart": return this.restart(message);
      case "warning": return this.warning(message.message);
      case "superseded": return this.superseded();
      case "complete": return this.complete(message);
      case "failed":
        return this.fail(message.error ? this.errorText(message.error) : this.text("jobFailed"), message.traceback);
      case "error": if (window.console) window.console.warn("gearattach:", message.error); return;
      // The server ends a stream at its maximum age; retry() follows the job again at once.
      case "reconnect": return;
      default: return;
    }
  };

  Widget.prototype.started = function () {
    this.el.classList.remove("gearattach-unserved");
    if (this.stepShown) return;  // progress already shown
    this.statusLine.textContent = this.text("working");
    this.bar.setAttribute("aria-valuetext", this.text("started"));
  };

  /* No worker registers the job's function: say so, until one does (or it starts). */
  Widget.prototype.unserved = function (name) {
    this.el.classList.add("gearattach-unserved");
    this.statusLine.textContent = this.text("unserved", { "function": name || "?" });
  };

  Widget.prototype.served = function () {
    if (!this.el.classList.contains("gearattach-unserved")) return;
    this.el.classList.remove("gearattach-unserved");
    this.statusLine.textContent = this.text("waiting");
  };

  Widget.prototype.superseded = function () {
    // A newer request replaced the run followed so far (latest wins): this is its run.
    this.fill.style.width = "0%";
    this.bar.removeAttribute("aria-valuenow");
    this.stepShown = false;  // the new run's progress is shown from its start
    this.el.classList.remove("gearattach-unserved");
    this.bar.setAttribute("aria-valuetext", this.text("startingOver"));
    this.statusLine.textContent = this.text("superseded");
    this.dataBox.hidden = true;
    this.dataBox.textContent = "";
  };

  Widget.prototype.status = function (numerator, denominator) {
    this.el.classList.remove("gearattach-unserved");
    if (!(denominator > 0)) {
      this.statusLine.textContent = this.text("working");
      return;
    }
    var percent = Math.max(0, Math.min(100, Math.round((100 * numerator) / denominator)));
    this.fill.style.width = percent + "%";
    this.bar.setAttribute("aria-valuenow", String(percent));
    var values = { numerator: numerator, denominator: denominator, percent: percent };
    this.bar.setAttribute("aria-valuetext", this.text("fraction", values));
    this.statusLine.textContent = this.text("step", values);
    this.stepShown = true;
  };

  Widget.prototype.data = function (value) {
    this.dataBox.hidden = false;
    this.dataBox.textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  };

  /* "R:N" as [R, N]; [0, 0] for no position. */
  function place(position) {
    if (!position) return [0, 0];
    var parts = position.split(":");
    return [parseInt(parts[0], 10), parseInt(parts[1], 10)];
  }

  function isCount(value) {
    return typeof value === "number" && value >= 0 && Math.floor(value) === value;
  }

  Widget.prototype.chunk = function (message) {
    if (!isCount(message.run) || !isCount(message.seq)) return;
    var held = place(this.position);
    // Already shown (a resumed stream never repeats one, but a page may hold two sources).
    if (message.run < held[0] || (message.run === held[0] && message.seq <= held[1])) return;
    if (message.run > held[0] && held[0] > 0) this.clearStream();
    this.position = message.run + ":" + message.seq;
    if (!this.emit("chunk", message) || !this.streamBox) return;
    var value = message.data;
    this.streamBox.hidden = false;
    // A text node: the chunk shows as text, whatever markup it holds.
    this.streamBox.appendChild(
      document.createTextNode(typeof value === "string" ? value : JSON.stringify(value))
    );
  };

  Widget.prototype.chunks = function (list) {
    if (!Array.isArray(list)) return;
    for (var i = 0; i < list.length && !this.done; i++) this.handle(list[i]);
  };

  Widget.prototype.restart = function (message) {
    if (!isCount(message.run)) return;
    if (message.run <= place(this.position)[0]) return;  // that run is shown already
    this.position = message.run + ":0";
    this.clearStream();
    this.emit("restart", message);
  };

  /* The job runs again from the start: what its earlier run streamed is no longer true. */
  Widget.prototype.clearStream = function () {
    if (!this.streamBox) return;
    this.streamBox.textContent = "";
    this.streamBox.hidden = true;
  };

  Widget.prototype.warning = function (text) {
    var item = document.createElement("li");
    item.textContent = text;
    this.warnings.hidden = false;
    this.warnings.appendChild(item);
  };

  Widget.prototype.finish = function (kind) {
    this.done = true;
    if (this.timer) window.clearTimeout(this.timer);
    if (this.connection) this.connection.close();
    this.el.classList.add("gearattach-" + kind);
    this.el.dataset.state = kind;
    this.fill.style.width = "100%";
    this.bar.setAttribute("aria-valuenow", "100");
    this.el.classList.remove("gearattach-unserved");
    this.bar.setAttribute("aria-valuetext", this.text(kind === "complete" ? "doneShort" : "stopped"));
    this.retitle(kind);
  };

  /* A page heading marked data-gearattach-heading beside the widget says how it ended. */
  Widget.prototype.retitle = function (kind) {
    var heading = this.el.parentNode && this.el.parentNode.querySelector("[data-gearattach-heading]");
    if (!heading) return;
    if (heading.dataset[kind]) heading.textContent = heading.dataset[kind];
    var title = heading.dataset["title" + kind.charAt(0).toUpperCase() + kind.slice(1)];
    if (title) document.title = title;
  };

  Widget.prototype.complete = function (message) {
    this.finish("complete");
    this.statusLine.textContent = this.text("done");
    if (!this.emit("complete", message)) return;
    var swap = this.el.dataset.swap === "document";
    var outcomeUrl = sameOrigin(this.el.dataset.outcomeUrl);
    // At most one navigation, and only to this site over http(s): a message is data,
    // never a place to go (a javascript: or another site's URL is not followed).
    if (swap && outcomeUrl && !message.download) {
      // The page's URL now names the job: the server answers it with the view's own
      // response, its status, headers and cookies, and the browser follows a redirect.
      window.location.replace(outcomeUrl);
      return;
    }
    if (swap && outcomeUrl && message.download) {
      // A file downloads with its name; this page stays, with a link to it below.
      window.location.assign(outcomeUrl);
    } else if (swap && !outcomeUrl && sameOrigin(message.redirect)) {
      window.location.assign(sameOrigin(message.redirect));
      return;
    } else if (swap && !outcomeUrl && typeof message.html === "string") {
      // The offloaded view's own page replaces this one, as if it had answered at once.
      document.open();
      document.write(message.html);
      document.close();
      return;
    }
    this.outcome.hidden = false;
    this.outcome.textContent = "";
    if (message.download) {
      var link = document.createElement("a");
      link.className = "gearattach-download";
      link.href = this.el.dataset.downloadUrl;
      link.setAttribute("download", message.download.name || "");
      link.textContent = message.download.name
        ? this.text("download", { name: message.download.name })
        : this.text("downloadResult");
      this.outcome.appendChild(link);
    } else if (typeof message.html === "string") {
      // Never into this page's DOM: the HTML is another view's, and may run script.
      var frame = document.createElement("iframe");
      frame.className = "gearattach-html";
      frame.setAttribute("sandbox", "");
      frame.setAttribute("title", this.text("finishedPage"));
      frame.srcdoc = message.html;
      this.outcome.appendChild(frame);
    } else {
      var pre = document.createElement("pre");
      pre.className = "gearattach-result";
      pre.textContent = JSON.stringify(message.result, null, 2);
      this.outcome.appendChild(pre);
    }
  };

  Widget.prototype.fail = function (error, traceback) {
    this.finish("failed");
    this.statusLine.textContent = this.text("failed");
    this.outcome.hidden = false;
    this.outcome.setAttribute("role", "alert");
    this.outcome.textContent = "";
    var p = document.createElement("p");
    p.className = "gearattach-error";
    p.textContent = error;
    this.outcome.appendChild(p);
    if (typeof traceback === "string" && traceback) {
      // Only with DEBUG on does the server send it (to whoever follows the job: its owner).
      var pre = document.createElement("pre");
      pre.className = "gearattach-traceback";
      pre.textContent = traceback;
      this.outcome.appendChild(pre);
    }
    this.emit("failed", { type: "failed", error: error });
  };

  function scan() {
    var found = document.querySelectorAll("[data-gearattach]:not([data-gearattach-started])");
    Array.prototype.forEach.call(found, function (el) {
      el.setAttribute("data-gearattach-started", "");
      var widget = new Widget(el);
      el.gearattach = widget;
      widget.start();
    });
  }

  window.GearAttach = { scan: scan, Widget: Widget };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", scan);
  } else {
    scan();
  }
})();
