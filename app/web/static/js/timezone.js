// The portal's time zone on the settings tab (admins): the zone in force, the CRM's, and the admin's own.
(function () {
  "use strict";
  var node = document.getElementById("rc-tz-config");
  if (!node) { return; }
  var config = JSON.parse(node.textContent);
  var form = document.getElementById("rc-tz-settings");
  var result = document.getElementById("rc-tz-result");

  function show(state) {
    var current = document.getElementById("rc-tz-current");
    current.textContent = state.label;
    current.title = state.time_zone;
    document.getElementById("rc-tz-crm").textContent = state.crm_label || config.text.unknown;
    var select = form.elements.time_zone;
    // «As in the CRM — Новосибирск (UTC+7)»: the first choice names the zone it follows.
    select.options[0].textContent = config.text.followCrm + (state.crm_label ? " — " + state.crm_label : "");
    select.value = state.override || "";
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = JSON.stringify({ time_zone: form.elements.time_zone.value });
    window.RC.api(config.token, config.url, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: body
    }).then(function (answer) {
      if (answer.ok) {
        window.RC.clearFields(form);
        show(answer.body.settings);
        result.textContent = config.text.saved;
        result.dataset.outcome = "saved";
        return;
      }
      result.textContent = window.RC.explain(form, answer, config.text.invalid);
      result.dataset.outcome = "error";
    });
  });
}());
