// Settings tab (admins): the seller's steps and the criteria to move on, per pipeline and stage, and the
// preset (our example of a B2B sale in nine statuses) installed into a chosen pipeline.
(function () {
  "use strict";
  var form = document.getElementById("rc-pb-settings");
  if (!form) { return; }
  var config = JSON.parse(document.getElementById("rc-pb-config").textContent);
  var box = document.getElementById("rc-pb-pipelines");
  var state = document.getElementById("rc-pb-state");
  var result = document.getElementById("rc-pb-result");
  var presetList = document.getElementById("rc-pb-preset-list");
  var presetPipeline = document.getElementById("rc-pb-preset-pipeline");
  var presetButton = document.getElementById("rc-pb-preset-install");
  var presetResult = document.getElementById("rc-pb-preset-result");
  var loaded = false;

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function area(stage, key, label, value) {
    var wrap = document.createElement("label");
    wrap.textContent = label + " ";
    var text = document.createElement("textarea");
    text.rows = 3;
    text.maxLength = 2000;
    text.dataset.stage = stage.id;
    text.dataset.key = key;
    text.value = value || "";
    text.setAttribute("aria-label", stage.name + ": " + label);
    text.addEventListener("input", function () {
      // amoCRM's won status is one id in every pipeline: every copy of that stage shows the same text.
      box.querySelectorAll('textarea[data-stage="' + CSS.escape(stage.id) + '"][data-key="' + key + '"]').forEach(function (twin) {
        if (twin !== text) { twin.value = text.value; }
      });
    });
    wrap.appendChild(text);
    return wrap;
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
        var texts = body.settings[stage.id] || {};
        var row = document.createElement("div");
        row.className = "rc-pb-stage";
        row.dataset.stageRow = stage.id;
        var title = document.createElement("h3");
        title.textContent = stage.name;
        row.appendChild(title);
        var fields = document.createElement("div");
        fields.className = "rc-grid";
        fields.appendChild(area(stage, "steps", config.text.steps, texts.steps));
        fields.appendChild(area(stage, "criteria", config.text.criteria, texts.criteria));
        row.appendChild(fields);
        group.appendChild(row);
      });
      box.appendChild(group);
    });
    presetPipeline.textContent = "";
    body.pipelines.forEach(function (pipeline) {
      var option = document.createElement("option");
      option.value = pipeline.id;
      option.textContent = pipeline.name;
      presetPipeline.appendChild(option);
    });
  }

  // The preset's statuses with their texts, so the admin reads what he installs.
  function renderPreset(preset) {
    presetList.textContent = "";
    preset.forEach(function (item) {
      var entry = document.createElement("li");
      entry.dataset.preset = item.code;
      var name = document.createElement("strong");
      name.className = "rc-pb-preset-name";
      name.textContent = item.name;
      entry.appendChild(name);
      if (item.postponed) { entry.appendChild(document.createTextNode(" (" + config.text.presetPostponed + ")")); }
      [["steps", config.text.steps], ["criteria", config.text.criteria]].forEach(function (part) {
        var text = document.createElement("p");
        text.className = "rc-pb-preset-" + part[0];
        text.style.whiteSpace = "pre-line";
        text.textContent = part[1] + ": " + (part[0] === "steps" ? "\n" : "") + item[part[0]];
        entry.appendChild(text);
      });
      presetList.appendChild(entry);
    });
  }

  function load(force) {
    if (loaded && !force) { return; }
    api(config.url).then(function (answer) {
      if (!answer.ok) { state.textContent = config.text.loadFailed + " " + window.RC.problem(answer); return; }
      loaded = true;
      state.textContent = "";
      render(answer.body);
      renderPreset(answer.body.preset);
    });
  }

  var settingsTab = document.querySelector('[data-tab="settings"]');
  if (settingsTab) { settingsTab.addEventListener("click", function () { load(false); }); }

  function failure(answer) {
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
    return config.text.invalid + " " + (lines.join(" · ") || window.RC.problem(answer));
  }

  presetButton.addEventListener("click", function () {
    presetButton.disabled = true;
    presetResult.textContent = "";
    api(config.presetUrl, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ pipeline_id: presetPipeline.value })
    }).then(function (answer) {
      presetButton.disabled = false;
      if (!answer.ok) { presetResult.textContent = failure(answer); presetResult.dataset.outcome = "invalid"; return; }
      var installed = answer.body.settings;
      presetResult.textContent = config.text.presetDone.replace("{count}", String(installed.created.length));
      presetResult.dataset.outcome = "saved";
      var chosen = presetPipeline.value;
      render({ pipelines: installed.pipelines, settings: installed.settings });
      presetPipeline.value = chosen;
    });
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var wanted = {};
    box.querySelectorAll("textarea[data-stage]").forEach(function (text) {
      var entry = wanted[text.dataset.stage] || (wanted[text.dataset.stage] = { steps: "", criteria: "" });
      entry[text.dataset.key] = text.value;
    });
    api(config.url, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ stage_playbook: wanted })
    }).then(function (answer) {
      if (answer.ok) { result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
      result.textContent = failure(answer);
      result.dataset.outcome = "invalid";
    });
  });
})();
