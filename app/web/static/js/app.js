// The main app page: tabs and the admin settings form. Identity travels in the X-RC-Token header.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-config").textContent);

  function api(url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-RC-Token": config.token }, options.headers || {});
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    });
  }

  document.querySelectorAll("[data-tab]").forEach(function (tab) {
    tab.addEventListener("click", function () {
      document.querySelectorAll("[data-tab]").forEach(function (other) {
        other.setAttribute("aria-selected", other === tab ? "true" : "false");
        document.getElementById("tab-" + other.dataset.tab).hidden = other !== tab;
      });
      if (tab.dataset.tab === "settings") { loadSettings(); }
    });
  });

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
    api(config.settingsUrl).then(function (result) {
      var state = document.getElementById("rc-settings-state");
      if (!result.ok) {
        state.textContent = config.text.loadFailed + " " + (result.body.message || result.status);
        return;
      }
      loaded = true;
      state.textContent = "";
      var s = result.body.settings;
      var activeUsers = result.body.users.filter(function (u) { return u.active; });
      var allPipelines = s.guarded_pipelines === "all";
      form.elements.all_pipelines.checked = allPipelines;
      fill("pipelines", result.body.pipelines, allPipelines ? [] : s.guarded_pipelines);
      ["qa_users", "heads", "exempt_users"].forEach(function (key) { fill(key, activeUsers, s[key]); });
      ["qa_departments", "head_departments"].forEach(function (key) { fill(key, result.body.departments, s[key]); });
      fill("reasons", result.body.reasons.map(function (r) { return { id: r.code, name: r.name }; }), s.reasons);
      form.elements.exempt_automation.checked = s.exempt_automation;
      form.elements.review_sla_hours.value = s.review_sla_hours;
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
        reasons: checked("reasons"),
        exempt_automation: form.elements.exempt_automation.checked,
        review_sla_hours: Number(form.elements.review_sla_hours.value)
      };
      api(config.settingsUrl, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload)
      }).then(function (response) {
        if (response.ok) {
          result.textContent = config.text.saved;
          result.dataset.outcome = "saved";
          return;
        }
        var fields = response.body.fields || {};
        var lines = Object.keys(fields).map(function (key) { return key + ": " + [].concat(fields[key]).join("; "); });
        result.textContent = config.text.invalid + " " + (lines.join(" · ") || response.body.message);
        result.dataset.outcome = "invalid";
      });
    });
  }
})();
