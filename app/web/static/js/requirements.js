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

  function summary(select) {
    var count = select.selectedOptions.length;
    return count ? config.text.count.replace("{count}", String(count)) : config.text.none;
  }

  function stageRow(stage, fields, required) {
    var row = document.createElement("div");
    row.className = "rc-req-stage";
    var label = document.createElement("label");
    label.textContent = stage.name + " ";
    var select = document.createElement("select");
    select.multiple = true;
    select.size = Math.min(6, Math.max(3, fields.length));
    select.dataset.stage = stage.id;
    select.setAttribute("aria-label", config.text.stage + ": " + stage.name);
    fields.forEach(function (field) {
      var option = document.createElement("option");
      option.value = field.code;
      option.textContent = field.label;
      option.selected = required.indexOf(field.code) !== -1;
      select.appendChild(option);
    });
    var note = document.createElement("span");
    note.className = "rc-note";
    note.dataset.count = stage.id;
    note.textContent = summary(select);
    select.addEventListener("change", function () {
      // amoCRM's won status is one id in every pipeline: every select of that stage shows the same choice.
      box.querySelectorAll('select[data-stage="' + CSS.escape(stage.id) + '"]').forEach(function (twin) {
        Array.prototype.forEach.call(twin.options, function (option, index) { option.selected = select.options[index].selected; });
        var twinNote = twin.closest(".rc-req-stage").querySelector("[data-count]");
        if (twinNote) { twinNote.textContent = summary(twin); }
      });
    });
    label.appendChild(select);
    row.appendChild(label);
    row.appendChild(note);
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
    box.querySelectorAll("select[data-stage]").forEach(function (select) {
      var codes = Array.prototype.map.call(select.selectedOptions, function (option) { return option.value; });
      if (codes.length) { wanted[select.dataset.stage] = { required: codes }; }
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
