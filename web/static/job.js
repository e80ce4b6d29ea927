// Job page: poll GET /jobs/<id>.json while the job runs, update the status badge and progress bar,
// and reload the page once the job finishes (the server then renders metrics or predictions).
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
  var terminal = ["succeeded", "failed", "cancelled"];
  var delay = interval;

  function render(job) {
    var pct = Math.max(0, Math.min(100, job.progress * 100));
    fill.style.width = pct.toFixed(1) + "%";
    bar.setAttribute("aria-valuenow", String(Math.round(pct)));
    text.textContent = Math.round(pct) + "%";
    if (panel.dataset.status !== job.status) {
      var span = document.createElement("span");
      span.className = "badge badge-" + job.status;
      span.textContent = job.status;
      badge.replaceChildren(span);
      panel.dataset.status = job.status;
    }
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
