// Settings tab (admins): the fields each stage requires, chosen per pipeline and stage from the CRM's deal fields.
(function () {
  "use strict";
  var form = document.getElementById("rc-req-settings");
  if (!form) { return; }
  var config = JSON.parse(document.getElementById("rc-req-config").textContent);
  var box = document.getElementById("rc-req-pipelines");
  var state = document.getElementById("rc-req-state");
  var result = document.getElementById("rc-req-result");
  var loaded = false;

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function chosen(picker) {
    return Array.prototype.filter.call(picker.querySelectorAll("input[type=checkbox]"), function (input) { return input.checked; });
  }

  function describe(picker) {
    // The closed picker reads like a filled select: the chosen fields' names, or «no required fields».
    var names = chosen(picker).map(function (input) { return input.parentNode.textContent.trim(); });
    picker.querySelector("summary").textContent = names.length ? names.join(", ") : config.text.none;
    var note = picker.closest(".rc-req-stage").querySelector("[data-count]");
    note.textContent = names.length ? config.text.count.replace("{count}", String(names.length)) : "";  // the box says «none»
  }

  // One stage's required fields: a compact picker (a disclosure that names the chosen fields) opening onto a filter
  // and the CRM's fields as checkboxes in columns; every part is reachable and usable from the keyboard.
  function stageRow(stage, fields, required) {
    var row = document.createElement("div");
    row.className = "rc-req-stage";
    var name = document.createElement("span");
    name.className = "rc-req-name";
    name.textContent = stage.name;
    var picker = document.createElement("details");
    picker.className = "rc-req-picker";
    picker.dataset.stage = stage.id;
    var summary = document.createElement("summary");
    summary.setAttribute("aria-label", config.text.stage + ": " + stage.name);
    picker.appendChild(summary);
    var panel = document.createElement("div");
    panel.className = "rc-req-panel";
    var filter = document.createElement("input");
    filter.type = "search";
    filter.placeholder = config.text.filter;
    filter.setAttribute("aria-label", config.text.filter + " (" + stage.name + ")");
    var options = document.createElement("div");
    options.className = "rc-req-options";
    options.setAttribute("role", "group");
    options.setAttribute("aria-label", config.text.stage + ": " + stage.name);
    fields.forEach(function (field) {
      var label = document.createElement("label");
      var input = document.createElement("input");
      input.type = "checkbox";
      input.value = field.code;
      input.checked = required.indexOf(field.code) !== -1;
      label.appendChild(input);
      label.appendChild(document.createTextNode(" " + field.label));
      options.appendChild(label);
    });
    var noMatch = document.createElement("p");
    noMatch.className = "rc-note";
    noMatch.hidden = true;
    noMatch.textContent = config.text.noMatch;
    filter.addEventListener("input", function () {
      var wanted = filter.value.trim().toLowerCase();
      var shown = 0;
      options.querySelectorAll("label").forEach(function (label) {
        label.hidden = wanted !== "" && label.textContent.toLowerCase().indexOf(wanted) === -1;
        if (!label.hidden) { shown += 1; }
      });
      noMatch.hidden = shown > 0;
    });
    filter.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); }  // Enter in the filter does not submit the form
    });
    options.addEventListener("change", function () {
      var codes = chosen(picker).map(function (input) { return input.value; });
      // amoCRM's won status is one id in every pipeline: every picker of that stage shows the same choice.
      box.querySelectorAll('.rc-req-picker[data-stage="' + CSS.escape(stage.id) + '"]').forEach(function (twin) {
        if (twin !== picker) {
          twin.querySelectorAll("input[type=checkbox]").forEach(function (other) { other.checked = codes.indexOf(other.value) !== -1; });
        }
        describe(twin);
      });
    });
    panel.appendChild(filter);
    panel.appendChild(options);
    panel.appendChild(noMatch);
    picker.appendChild(panel);
    var note = document.createElement("span");
    note.className = "rc-note";
    note.dataset.count = stage.id;
    row.appendChild(name);
    row.appendChild(picker);
    row.appendChild(note);
    describe(picker);
    return row;
  }

  function render(body) {
    box.textContent = "";
    body.pipelines.forEach(function (pipeline) {
      var group = document.createElement("fieldset");
      group.dataset.pipeline = pipeline.id;
      var legend = document.createElement("legend");
      legend.textContent = config.text.pipeline + ": " + pipeline.name;
      group.appendChild(legend);
      pipeline.stages.forEach(function (stage) {
        var required = (body.settings[stage.id] || { required: [] }).required;
        group.appendChild(stageRow(stage, body.fields, required));
      });
      box.appendChild(group);
    });
  }

  function load() {
    if (loaded) { return; }
    api(config.url).then(function (answer) {
      if (!answer.ok) { state.textContent = config.text.loadFailed + " " + (answer.body.message || answer.status); return; }
      loaded = true;
      state.textContent = "";
      render(answer.body);
    });
  }

  var settingsTab = document.querySelector('[data-tab="settings"]');
  if (settingsTab) { settingsTab.addEventListener("click", load); }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var wanted = {};
    box.querySelectorAll(".rc-req-picker[data-stage]").forEach(function (picker) {
      var codes = chosen(picker).map(function (input) { return input.value; });
      if (codes.length) { wanted[picker.dataset.stage] = { required: codes }; }
    });
    api(config.url, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stage_requirements: wanted })
    }).then(function (answer) {
      if (answer.ok) { result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
      var fields = answer.body.fields || {};
      var lines = [];
      Object.keys(fields).forEach(function (key) {
        var value = fields[key];
        if (value && typeof value === "object" && !Array.isArray(value)) {
          Object.keys(value).forEach(function (stage) { lines.push(stage + ": " + [].concat(value[stage]).join("; ")); });
        } else {
          lines.push(key + ": " + [].concat(value).join("; "));
        }
      });
      result.textContent = config.text.invalid + " " + (lines.join(" · ") || answer.body.message);
      result.dataset.outcome = "invalid";
    });
  });
})();
