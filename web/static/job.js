// Job page: poll GET /jobs/<id>.json while the job runs, update the status badge, progress bar and ETA, swap in
// fresh charts (server-rendered SVG from /jobs/<id>/charts) whenever the training reports a new evaluation, and
// reload the page once the job finishes (the server then renders metrics or predictions).
(function () {
  "use strict";
  var panel = document.getElementById("job-status");
  if (!panel || panel.dataset.terminal === "true") return;
  var url = panel.dataset.jobUrl;
  var interval = parseInt(panel.dataset.pollMs || "1000", 10);
  var bar = document.getElementById("job-progress");
  var fill = bar.querySelector(".progress-fill");
  var text = document.getElementById("job-progress-text");
  var badge = document.getElementById("job-status-badge");
  var eta = document.getElementById("job-eta");
  var etaValue = document.getElementById("job-eta-value");
  var results = document.getElementById("job-results");
  var terminal = ["succeeded", "failed", "cancelled"];
  var delay = interval;
  // history entries the charts on screen were drawn from (the server wrote how many it rendered)
  var evaluationsShown = results ? parseInt(results.dataset.evaluations || "0", 10) : 0;

  function duration(seconds) {
    var s = Math.max(0, Math.round(seconds));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (h) return h + " h " + two(m) + " min";
    return m ? m + " min " + two(r) + " s" : r + " s";
  }

  function evaluations(job) {
    var history = job.metrics && job.metrics.history;
    return Array.isArray(history) ? history.length : 0;
  }

  function refreshCharts(job) {
    if (!results) return;
    var count = evaluations(job);
    if (count === evaluationsShown) return;
    var before = evaluationsShown;
    evaluationsShown = count;
    fetch(results.dataset.url, { headers: { Accept: "text/html" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) { results.innerHTML = html; })
      .catch(function () { evaluationsShown = before; }); // try again on the next poll
  }

  function render(job) {
    var pct = Math.max(0, Math.min(100, job.progress * 100));
    fill.style.width = pct.toFixed(1) + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    text.textContent = Math.round(pct) + "%";
    if (eta) {
      var known = job.eta_seconds !== null && job.eta_seconds !== undefined;
      eta.hidden = !known;
      if (known) etaValue.textContent = duration(job.eta_seconds);
    }
    if (panel.dataset.status !== job.status) {
      var span = document.createElement("span");
      span.className = "badge badge-" + job.status;
      span.textContent = job.status;
      badge.replaceChildren(span);
      panel.dataset.status = job.status;
    }
    refreshCharts(job);
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (job) {
        render(job);
        if (job.terminal || terminal.indexOf(job.status) >= 0) {
          setTimeout(function () { window.location.reload(); }, 300);
          return;
        }
        delay = interval;
        setTimeout(poll, delay);
      })
      .catch(function () {
        delay = Math.min(delay * 2, 15000); // server restarting or offline: back off, keep trying
        setTimeout(poll, delay);
      });
  }

  setTimeout(poll, interval);
})();
