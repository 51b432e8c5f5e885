// The "Tasks" tab: the overdue report for heads of sales, and a button to scan now.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-tc-config").textContent);
  var state = document.getElementById("rc-tc-state");
  var table = document.getElementById("rc-tc-report");

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  var shown = null;  // scanned_at of the report on screen

  function load(after) {
    return api(config.reportUrl).then(function (answer) {
      if (answer.status === 403) { state.textContent = config.text.headsOnly; table.hidden = true; return null; }
      if (!answer.ok) { state.textContent = config.text.loadFailed + " " + window.RC.problem(answer); return null; }
      var report = answer.body;
      shown = report.scanned_at;
      state.textContent = (after ? after + " " : "") +
        (report.scanned_at ? config.text.scannedAt + " " + report.scanned_at_text : report.scanned_at_text);
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
      return report.scanned_at;
    });
  }

  // After «Проверить сейчас»: ask for the report every few seconds until a newer scan is in (about a minute
  // at most), then show it; no «обновите через минуту».
  function refreshWhenScanned(before, triesLeft) {
    if (triesLeft <= 0) { state.textContent = config.text.stillRunning; return; }
    setTimeout(function () {
      api(config.reportUrl).then(function (answer) {
        if (answer.ok && answer.body.scanned_at && answer.body.scanned_at !== before) {
          load(config.text.refreshed);
        } else {
          refreshWhenScanned(before, triesLeft - 1);
        }
      });
    }, config.pollMs || 3000);
  }

  // Admins: the task-control section of the settings tab.
  var form = document.getElementById("rc-tc-settings");
  var flags = ["enabled", "notify_deals_without_tasks", "notify_overdue", "require_task_to_advance"];
  var numbers = ["scan_interval_minutes", "digest_hour"];
  var settingsLoaded = false;

  function loadSettings() {
    if (!form || settingsLoaded) { return; }
    settingsLoaded = true;
    api(config.settingsUrl).then(function (answer) {
      if (!answer.ok) { settingsLoaded = false; return; }
      flags.forEach(function (name) { form.elements[name].checked = answer.body.settings[name]; });
      numbers.forEach(function (name) { form.elements[name].value = answer.body.settings[name]; });
    });
  }

  if (form) {
    var settingsTab = document.querySelector('[data-tab="settings"]');
    if (settingsTab) { settingsTab.addEventListener("click", loadSettings); }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = document.getElementById("rc-tc-settings-result");
      var payload = {};
      flags.forEach(function (name) { payload[name] = form.elements[name].checked; });
      numbers.forEach(function (name) { payload[name] = Number(form.elements[name].value); });
      api(config.settingsUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload)
      }).then(function (answer) {
        if (answer.ok) { window.RC.clearFields(form); result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
        result.textContent = window.RC.explain(form, answer, config.text.invalid);
        result.dataset.outcome = "invalid";
      });
    });
  }

  document.querySelector('[data-tab="tasks"]').addEventListener("click", function () { load(); });
  document.getElementById("rc-tc-rescan").addEventListener("click", function () {
    var before = shown;
    api(config.scanUrl, { method: "POST" }).then(function (answer) {
      state.textContent = answer.ok ? answer.body.message : window.RC.problem(answer);
      if (answer.ok) { refreshWhenScanned(before, 20); }
    });
  });
})();
