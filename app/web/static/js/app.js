// The main app page: tabs and the admin settings form. Identity travels in the X-RC-Token header.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-config").textContent);

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  document.querySelectorAll("[data-tab]").forEach(function (tab) {
    tab.addEventListener("click", function () {
      document.querySelectorAll("[data-tab]").forEach(function (other) {
        other.setAttribute("aria-selected", other === tab ? "true" : "false");
        document.getElementById("tab-" + other.dataset.tab).hidden = other !== tab;
      });
      // Blocks that belong to some tabs only (the duty rota: the exchange and the queue).
      document.querySelectorAll("[data-rc-tabs]").forEach(function (block) {
        block.hidden = block.dataset.rcTabs.split(" ").indexOf(tab.dataset.tab) === -1;
      });
      if (tab.dataset.tab === "settings") { loadSettings(); loadCpl(); loadSchedule(); }
      if (tab.dataset.tab === "reports") { loadReport(); }
      if (tab.dataset.tab === "status") { loadStatus(); }
    });
  });

  // Start on the role's first tab once every page script has hooked its tabs.
  window.addEventListener("load", function () {
    var start = document.querySelector('[data-tab][aria-selected="true"]');
    if (start) { start.click(); }
  });

  // ---- the install's health (admins)
  function loadStatus() {
    var state = document.getElementById("rc-portal-status");
    var list = document.getElementById("rc-health");
    if (!state || !list) { return; }
    api(config.statusUrl).then(function (result) {
      if (!result.ok) { state.textContent = window.RC.problem(result); return; }
      list.textContent = "";
      var attention = [];
      result.body.items.forEach(function (item) {
        var row = document.createElement("div");
        row.dataset.health = item.key;
        row.dataset.ok = item.ok ? "true" : "false";
        var dt = document.createElement("dt");
        dt.textContent = item.label;
        var dd = document.createElement("dd");
        dd.textContent = item.value;
        row.appendChild(dt);
        row.appendChild(dd);
        list.appendChild(row);
        if (!item.ok) { attention.push(item.label); }
      });
      state.textContent = attention.length ? config.text.healthAttention + " " + attention.join(", ") + "." : config.text.healthOk;
      state.dataset.healthy = attention.length ? "false" : "true";
    });
  }

  var form = document.getElementById("rc-settings");
  var loaded = false;

  function checkbox(name, value, label, checked) {
    var wrapper = document.createElement("label");
    wrapper.className = "rc-choice";
    wrapper.dataset.label = label.toLowerCase();
    var input = document.createElement("input");
    input.type = "checkbox";
    input.name = name;
    input.value = value;
    input.checked = checked;
    wrapper.appendChild(input);
    wrapper.appendChild(document.createTextNode(" " + label));
    return wrapper;
  }

  function fill(name, items, selected) {
    var list = form.querySelector('[data-list="' + name + '"]');
    list.textContent = "";
    items.forEach(function (item) {
      list.appendChild(checkbox(name, item.id, item.name, selected.indexOf(item.id) >= 0));
    });
  }

  function checked(name) {
    return Array.prototype.map.call(form.querySelectorAll('input[name="' + name + '"]:checked'), function (i) { return i.value; });
  }

  function loadSettings() {
    if (loaded || !form) { return; }
    loaded = true;  // one load at a time: a second click never overwrites what the user is typing
    api(config.settingsUrl).then(function (result) {
      var state = document.getElementById("rc-settings-state");
      if (!result.ok) {
        loaded = false;
        state.textContent = config.text.loadFailed + " " + window.RC.problem(result);
        return;
      }
      state.textContent = "";
      var s = result.body.settings;
      var activeUsers = result.body.users.filter(function (u) { return u.active; });
      var allPipelines = s.guarded_pipelines === "all";
      form.elements.all_pipelines.checked = allPipelines;
      fill("pipelines", result.body.pipelines, allPipelines ? [] : s.guarded_pipelines);
      ["qa_users", "heads", "exempt_users"].forEach(function (key) { fill(key, activeUsers, s[key]); });
      ["qa_departments", "head_departments"].forEach(function (key) { fill(key, result.body.departments, s[key]); });
      form.elements.exempt_automation.checked = s.exempt_automation;
      form.elements.fine_deletions.checked = s.fine_deletions;
      form.elements.repeat_clients.checked = s.repeat_clients;
      form.elements.review_sla_hours.value = s.review_sla_hours;
      form.elements.abc_a_idle_hours.value = s.abc_a_idle_hours;
      form.elements.abc_a_idle_heads.checked = s.abc_a_idle_heads;
    });
  }

  if (form) {
    form.querySelectorAll('input[type="search"]').forEach(function (search) {
      search.addEventListener("input", function () {
        var needle = search.value.trim().toLowerCase();
        search.parentElement.querySelectorAll(".rc-choice").forEach(function (choice) {
          choice.hidden = needle !== "" && choice.dataset.label.indexOf(needle) < 0;
        });
      });
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = document.getElementById("rc-settings-result");
      var payload = {
        guarded_pipelines: form.elements.all_pipelines.checked ? "all" : checked("pipelines"),
        qa_users: checked("qa_users"),
        heads: checked("heads"),
        exempt_users: checked("exempt_users"),
        qa_departments: checked("qa_departments"),
        head_departments: checked("head_departments"),
        exempt_automation: form.elements.exempt_automation.checked,
        fine_deletions: form.elements.fine_deletions.checked,
        repeat_clients: form.elements.repeat_clients.checked,
        review_sla_hours: Number(form.elements.review_sla_hours.value),
        abc_a_idle_hours: Number(form.elements.abc_a_idle_hours.value),
        abc_a_idle_heads: form.elements.abc_a_idle_heads.checked
      };
      api(config.settingsUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload)
      }).then(function (response) {
        if (response.ok) {
          window.RC.clearFields(form);
          result.textContent = config.text.saved;
          result.dataset.outcome = "saved";
          return;
        }
        result.textContent = window.RC.explain(form, response, config.text.invalid, function (path) {
          return path === "guarded_pipelines" ? form.querySelector('[data-list="pipelines"]') : null;
        });
        result.dataset.outcome = "invalid";
      });
    });
  }
  // ---- CPL table and report schedule (admin settings tab)
  var cplForm = document.getElementById("rc-cpl");
  var cplLoaded = false;

  function showErrors(target, response, form) {
    target.textContent = window.RC.explain(form, response, config.text.invalid, function (path) {
      var parts = path.split(".");
      if (parts.length === 2 && form) {
        return form.querySelector('input[name="' + parts[0] + '"][data-key="' + parts[1] + '"]') ||
          form.querySelector('[name="' + parts[0] + "_" + parts[1] + '"]');
      }
      return null;
    });
    target.dataset.outcome = "invalid";
  }

  // «3000» for a whole amount, not the API's «3000.00»; kopecks stay («1500.50»).
  function plainAmount(value) {
    return value ? String(value).replace(/\.0+$/, "") : "";
  }

  function amountRows(name, items, values) {
    var list = cplForm.querySelector('[data-amounts="' + name + '"]');
    list.textContent = "";
    items.forEach(function (item) {
      var label = document.createElement("label");
      label.className = "rc-amount";
      label.appendChild(document.createTextNode(item.name + " "));
      var input = document.createElement("input");
      input.name = name;
      input.dataset.key = item.id;
      input.inputMode = "decimal";
      input.size = 10;
      input.value = plainAmount(values[item.id]);
      label.appendChild(input);
      list.appendChild(label);
    });
  }

  function loadCpl() {
    if (cplLoaded || !cplForm) { return; }
    cplLoaded = true;
    api(config.cplUrl).then(function (result) {
      var state = document.getElementById("rc-cpl-result");
      if (!result.ok) { cplLoaded = false; state.textContent = config.text.loadFailed + " " + window.RC.problem(result); return; }
      var s = result.body.settings;
      cplForm.elements.currency.value = s.currency;
      cplForm.elements["default"].value = plainAmount(s["default"]);
      amountRows("by_source", result.body.sources, s.by_source);
      amountRows("by_pipeline", result.body.pipelines, s.by_pipeline);
    });
  }

  function amounts(name) {
    var table = {};
    cplForm.querySelectorAll('input[name="' + name + '"]').forEach(function (input) {
      if (input.value.trim() !== "") { table[input.dataset.key] = input.value.trim(); }
    });
    return table;
  }

  if (cplForm) {
    cplForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var result = document.getElementById("rc-cpl-result");
      api(config.cplUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          currency: cplForm.elements.currency.value.trim().toUpperCase(),
          "default": cplForm.elements["default"].value.trim() || "0",
          by_source: amounts("by_source"),
          by_pipeline: amounts("by_pipeline")
        })
      }).then(function (response) {
        if (response.ok) { window.RC.clearFields(cplForm); result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
        showErrors(result, response, cplForm);
      });
    });
  }

  var scheduleForm = document.getElementById("rc-schedule");
  var scheduleLoaded = false;

  function loadSchedule() {
    if (scheduleLoaded || !scheduleForm) { return; }
    scheduleLoaded = true;
    api(config.scheduleUrl).then(function (result) {
      if (!result.ok) { scheduleLoaded = false; return; }
      var s = result.body.settings;
      ["weekly", "monthly"].forEach(function (kind) {
        scheduleForm.elements[kind + "_enabled"].checked = s[kind].enabled;
        scheduleForm.elements[kind + "_hour"].value = s[kind].hour;
      });
      scheduleForm.elements.weekly_weekday.value = s.weekly.weekday;
      scheduleForm.elements.monthly_day.value = s.monthly.day;
    });
  }

  if (scheduleForm) {
    scheduleForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = scheduleForm.elements;
      var result = document.getElementById("rc-schedule-result");
      api(config.scheduleUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          weekly: { enabled: f.weekly_enabled.checked, weekday: Number(f.weekly_weekday.value), hour: Number(f.weekly_hour.value) },
          monthly: { enabled: f.monthly_enabled.checked, day: Number(f.monthly_day.value), hour: Number(f.monthly_hour.value) }
        })
      }).then(function (response) {
        if (response.ok) { window.RC.clearFields(scheduleForm); result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
        showErrors(result, response, scheduleForm);
      });
    });
  }

  // ---- reports (heads of sales)
  var periodForm = document.getElementById("rc-report-period");
  var reportBox = document.getElementById("rc-report");

  function iso(day) {
    return day.getFullYear() + "-" + String(day.getMonth() + 1).padStart(2, "0") + "-" + String(day.getDate()).padStart(2, "0");
  }

  function preset(name) {
    var parts = config.today.split("-").map(Number);
    var today = new Date(parts[0], parts[1] - 1, parts[2]);
    var monday = new Date(today);
    monday.setDate(today.getDate() - ((today.getDay() + 6) % 7));
    if (name === "this_week") { return [monday, today]; }
    if (name === "last_week") {
      var start = new Date(monday); start.setDate(monday.getDate() - 7);
      var end = new Date(monday); end.setDate(monday.getDate() - 1);
      return [start, end];
    }
    if (name === "last_month") {
      return [new Date(today.getFullYear(), today.getMonth() - 1, 1), new Date(today.getFullYear(), today.getMonth(), 0)];
    }
    return [new Date(today.getFullYear(), today.getMonth(), 1), today];
  }

  // The period's fields show day-first dates (datefield.js); the server gets ISO.
  function periodQuery() {
    var f = periodForm.elements;
    return "?from=" + encodeURIComponent(window.RCDate.iso(f.from) || "") + "&to=" + encodeURIComponent(window.RCDate.iso(f.to) || "");
  }

  function setPeriod(range) {
    window.RCDate.set(periodForm.elements.from, iso(range[0]));
    window.RCDate.set(periodForm.elements.to, iso(range[1]));
  }

  function loadReport(doneMessage) {
    if (!periodForm) { return; }
    if (!periodForm.elements.from.value) { setPeriod(preset("this_month")); }
    var state = document.getElementById("rc-report-state");
    var fromOk = window.RCDate.check(periodForm.elements.from);
    var toOk = window.RCDate.check(periodForm.elements.to);
    if (!fromOk || !toOk) {
      state.textContent = periodForm.elements[fromOk ? "to" : "from"].getAttribute("data-rc-date-invalid");
      return;
    }
    state.textContent = config.text.loading;
    fetch(config.reportViewUrl + periodQuery(), { headers: { "X-RC-Token": config.token, "X-RC-Lang": window.RC.language } }).then(function (response) {
      return response.text().then(function (text) {
        if (!response.ok) {
          var body = {};
          try { body = JSON.parse(text); } catch (ignored) { /* not JSON */ }
          state.textContent = config.text.reportFailed + " " + window.RC.problem({ body: body });
          return;
        }
        reportBox.innerHTML = text;
        state.textContent = typeof doneMessage === "string" ? doneMessage : "";
      });
    });
  }

  function downloadCsv(name) {
    var url = config.reportCsvUrl.replace("TABLE", name) + periodQuery();
    fetch(url, { headers: { "X-RC-Token": config.token, "X-RC-Lang": window.RC.language } }).then(function (response) {
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          document.getElementById("rc-report-state").textContent = window.RC.problem({ body: body });
        });
      }
      var disposition = response.headers.get("Content-Disposition") || "";
      var match = /filename="([^"]+)"/.exec(disposition);
      return response.blob().then(function (blob) {
        var link = document.createElement("a");
        link.href = URL.createObjectURL(blob);
        link.download = match ? match[1] : name + ".csv";
        document.body.appendChild(link);
        link.click();
        setTimeout(function () { URL.revokeObjectURL(link.href); link.remove(); }, 1000);
      });
    });
  }

  if (periodForm) {
    periodForm.addEventListener("submit", function (event) { event.preventDefault(); loadReport(""); });
    periodForm.querySelectorAll("[data-preset]").forEach(function (button) {
      button.addEventListener("click", function () {
        setPeriod(preset(button.dataset.preset));
        loadReport();
      });
    });
    reportBox.addEventListener("click", function (event) {
      var button = event.target.closest("[data-csv]");
      if (button) { downloadCsv(button.dataset.csv); }
    });
    reportBox.addEventListener("submit", function (event) {
      var form = event.target.closest("[data-appeal]");
      if (!form) { return; }
      event.preventDefault();
      var reason = form.elements.reason.value.trim();
      if (!reason) { form.elements.reason.focus(); return; }
      api(config.appealUrl.replace("/0/", "/" + form.dataset.appeal + "/"), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ reason: reason })
      }).then(function (response) {
        var state = document.getElementById("rc-report-state");
        if (!response.ok) { state.textContent = window.RC.problem(response); return; }
        loadReport(config.text.appealDone);
      });
    });
  }
})();
