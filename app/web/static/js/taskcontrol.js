// The "Tasks" tab: the overdue report for heads of sales, and a button to scan now.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-tc-config").textContent);
  var state = document.getElementById("rc-tc-state");
  var table = document.getElementById("rc-tc-report");

  function api(url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-RC-Token": config.token }, options.headers || {});
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    });
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function load() {
    api(config.reportUrl).then(function (answer) {
      if (answer.status === 403) { state.textContent = config.text.headsOnly; table.hidden = true; return; }
      if (!answer.ok) { state.textContent = config.text.loadFailed + " " + (answer.body.message || answer.status); return; }
      var report = answer.body;
      state.textContent = report.scanned_at ? config.text.scannedAt + " " + report.scanned_at_text : report.scanned_at_text;
      var body = table.querySelector("tbody");
      body.textContent = "";
      report.managers.forEach(function (manager) {
        var row = document.createElement("tr");
        cell(row, manager.name);
        cell(row, String(manager.open_deals));
        cell(row, String(manager.deals_without_tasks));
        cell(row, String(manager.overdue_tasks));
        cell(row, manager.oldest_overdue_text);
        body.appendChild(row);
      });
      table.hidden = report.managers.length === 0;
    });
  }

  document.querySelector('[data-tab="tasks"]').addEventListener("click", load);
  document.getElementById("rc-tc-rescan").addEventListener("click", function () {
    api(config.scanUrl, { method: "POST" }).then(function (answer) {
      state.textContent = answer.body.message || String(answer.status);
    });
  });
})();
