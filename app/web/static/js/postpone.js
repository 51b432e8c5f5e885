// Settings tab (admins): per pipeline, the stage a postponed deal comes back to on its return date (or none).
(function () {
  "use strict";
  var form = document.getElementById("rc-postpone-settings");
  if (!form) { return; }
  var config = JSON.parse(document.getElementById("rc-postpone-config").textContent);
  var box = document.getElementById("rc-postpone-pipelines");
  var state = document.getElementById("rc-postpone-state");
  var result = document.getElementById("rc-postpone-result");
  var loaded = false;

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function render(body) {
    var chosen = body.settings.postpone_return_stage || {};
    box.textContent = "";
    body.pipelines.forEach(function (pipeline) {
      var label = document.createElement("label");
      label.textContent = config.text.pipeline + ": " + pipeline.name + " ";
      var select = document.createElement("select");
      select.dataset.pipeline = pipeline.id;
      var stay = document.createElement("option");
      stay.value = "";
      stay.textContent = config.text.stay;
      select.appendChild(stay);
      pipeline.stages.forEach(function (stage) {
        var option = document.createElement("option");
        option.value = stage.id;
        option.textContent = stage.name;
        option.selected = chosen[pipeline.id] === stage.id;
        select.appendChild(option);
      });
      label.appendChild(select);
      box.appendChild(label);  // a labelled field of the .rc-grid: the pipeline's name above its select
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
  if (!form.closest("[hidden]")) { load(); }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var wanted = {};
    box.querySelectorAll("select[data-pipeline]").forEach(function (select) {
      if (select.value) { wanted[select.dataset.pipeline] = select.value; }
    });
    api(config.url, {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ postpone_return_stage: wanted })
    }).then(function (answer) {
      if (answer.ok) { result.textContent = config.text.saved; result.dataset.outcome = "saved"; return; }
      var fields = (answer.body.fields || {}).postpone_return_stage || {};
      var lines = Object.keys(fields).map(function (key) { return key + ": " + [].concat(fields[key]).join("; "); });
      result.textContent = config.text.invalid + " " + (lines.join(" · ") || answer.body.message);
      result.dataset.outcome = "invalid";
    });
  });
})();
