// Live status for the checkout page: server-sent events, polling as a fallback, and a
// countdown measured from the server's "seconds left", never from the phone's clock.
(function () {
  "use strict";
  var root = document.getElementById("checkout");
  if (!root) { return; }
  var states = ["pending", "paid", "late_paid", "expired", "closed", "refunded"];
  var current = root.getAttribute("data-status");
  var returnUrl = root.getAttribute("data-return-url");
  var started = Date.now();
  var secondsLeft = parseInt(root.getAttribute("data-expires-in"), 10) || 0;
  var countdown = document.getElementById("countdown");
  var redirectTimer = null;
  var source = null;
  var pollTimer = null;

  function show(state) {
    if (states.indexOf(state) < 0 || state === current) { return; }
    current = state;
    root.setAttribute("data-status", state);
    states.forEach(function (s) {
      var el = document.getElementById("state-" + (s === "late_paid" ? "late" : s));
      if (el) { el.hidden = s !== state; }
    });
    if (state !== "pending" && state !== "expired") {
      stop();
      if (state === "paid" && returnUrl && !redirectTimer) {
        redirectTimer = setTimeout(function () { window.location.assign(returnUrl); }, 3000);
      }
    }
  }

  function stop() {
    if (source) { source.close(); source = null; }
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function tick() {
    if (!countdown || current !== "pending") { return; }
    var left = Math.max(0, secondsLeft - Math.floor((Date.now() - started) / 1000));
    var m = Math.floor(left / 60), s = left % 60;
    countdown.textContent = m + ":" + (s < 10 ? "0" : "") + s;
    if (left === 0) { poll(); }
  }

  function poll() {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", root.getAttribute("data-status-url"));
    xhr.setRequestHeader("Accept", "application/json");
    xhr.onload = function () {
      if (xhr.status === 200) {
        try { show(JSON.parse(xhr.responseText).status); } catch (e) { /* try again next round */ }
      }
    };
    xhr.send();
  }

  function startPolling() {
    if (!pollTimer) { pollTimer = setInterval(poll, 2000); }
  }

  if (current === "pending" || current === "expired") {
    tick();
    setInterval(tick, 1000);
    if (window.EventSource) {
      source = new EventSource(root.getAttribute("data-events-url"));
      source.addEventListener("status", function (e) {
        try { show(JSON.parse(e.data).status); } catch (err) { startPolling(); }
      });
      source.onerror = function () {
        // The browser reconnects by itself; polling covers the gap meanwhile.
        startPolling();
      };
    } else {
      startPolling();
    }
  } else if (current === "paid" && returnUrl) {
    redirectTimer = setTimeout(function () { window.location.assign(returnUrl); }, 3000);
  }
})();
