// The QA queue tab of the main page, and the callback settings form. Identity: the X-RC-Token header.
(function () {
  "use strict";
  var token = JSON.parse(document.getElementById("rc-config").textContent).token;
  var config = JSON.parse(document.getElementById("rc-queue-config").textContent);
  var filters = document.getElementById("rc-queue-filters");
  var filled = false;
  // «Мои отказы» of a sales manager has no manager column: every case there is his.
  var withManager = Boolean(document.querySelector('#rc-queue th[data-col="manager"]'));

  function api(url, options) {
    return window.RC.api(token, url, options);
  }

  function fillFilters(choices) {
    if (filled) { return; }
    filled = true;
    Object.keys(choices).forEach(function (key) {
      var select = filters.elements[key];
      if (!select) { return; }
      choices[key].forEach(function (item) {
        var option = document.createElement("option");
        option.value = item.id;
        option.textContent = item.name;
        select.appendChild(option);
      });
    });
  }

  function cell(row, value, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    if (value instanceof Node) { td.appendChild(value); } else { td.textContent = value; }
    row.appendChild(td);
    return td;
  }

  function loadQueue() {
    var state = document.getElementById("rc-queue-state");
    var table = document.getElementById("rc-queue");
    state.textContent = config.text.loading;
    var query = new URLSearchParams(new FormData(filters)).toString();
    api(config.queueUrl + "?" + query).then(function (result) {
      if (!result.ok) {
        table.hidden = true;
        state.textContent = config.text.failed + " " + window.RC.problem(result);
        return;
      }
      fillFilters(result.body.filters);
      var body = table.querySelector("tbody");
      body.textContent = "";
      result.body.cases.forEach(function (item) {
        var row = document.createElement("tr");
        row.dataset.case = item.id;
        row.dataset.overdue = item.overdue ? "true" : "false";
        var link = document.createElement("a");
        link.href = item.url;
        window.RCFrame.dealLink(link);
        link.textContent = item.title;
        cell(row, link);
        cell(row, item.due_at + " (" + (item.overdue ? config.text.overdue : config.text.left) + " " + item.sla + ")", "rc-sla");
        cell(row, item.state_label + (item.callback_at ? " · " + config.text.callback + " " + item.callback_at : ""));
        if (withManager) { cell(row, item.manager); }
        cell(row, item.qa_user);
        cell(row, item.reason);
        body.appendChild(row);
      });
      table.hidden = result.body.cases.length === 0;
      state.textContent = result.body.cases.length ? "" : config.text.empty;
    });
  }

  filters.addEventListener("change", loadQueue);
  var queueTab = document.querySelector('[data-tab="queue"]');
  queueTab.addEventListener("click", loadQueue);

  var settings = document.getElementById("rc-review-settings");
  var settingsTab = document.querySelector('[data-tab="settings"]');
  if (settings && settingsTab) {
    var settingsLoaded = false;
    settingsTab.addEventListener("click", function () {
      if (settingsLoaded) { return; }
      settingsLoaded = true;
      api(config.settingsUrl).then(function (result) {
        if (!result.ok) { settingsLoaded = false; return; }
        settings.elements.callback_interval_minutes.value = result.body.settings.callback_interval_minutes;
        settings.elements.callback_attempts.value = result.body.settings.callback_attempts;
      });
    });
    settings.addEventListener("submit", function (event) {
      event.preventDefault();
      var out = document.getElementById("rc-review-settings-result");
      api(config.settingsUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          callback_interval_minutes: Number(settings.elements.callback_interval_minutes.value),
          callback_attempts: Number(settings.elements.callback_attempts.value)
        })
      }).then(function (response) {
        if (response.ok) {
          window.RC.clearFields(settings);
          out.textContent = config.text.saved;
          out.dataset.outcome = "saved";
          return;
        }
        out.textContent = window.RC.explain(settings, response, config.text.invalid);
        out.dataset.outcome = "invalid";
      });
    });
  }
})();
