// Deal tab (both CRMs): the deal's current stage with the seller's steps and the criteria to move on, and what
// this deal still lacks for the next stage (required fields not filled in, an open task when the rule is on).
(function () {
  "use strict";
  var holder = document.getElementById("rc-pb-tab-config");
  if (!holder) { return; }
  var config = JSON.parse(holder.textContent);
  var state = document.getElementById("rc-pb-state");

  function show(id, visible) { document.getElementById(id).hidden = !visible; }

  function render(view) {
    document.getElementById("rc-pb-stage").textContent = view.stage.name;
    document.getElementById("rc-pb-next").textContent = view.next_stage ? view.next_stage.name : "";
    show("rc-pb-next-row", Boolean(view.next_stage));
    show("rc-pb-facts", true);
    var steps = document.getElementById("rc-pb-steps");
    steps.textContent = "";
    view.steps.split("\n").filter(function (line) { return line.trim(); }).forEach(function (line) {
      var item = document.createElement("li");
      item.textContent = line.trim();
      steps.appendChild(item);
    });
    show("rc-pb-steps-box", steps.children.length > 0);
    document.getElementById("rc-pb-criteria").textContent = view.criteria;
    show("rc-pb-criteria-box", Boolean(view.criteria));
    var missing = document.getElementById("rc-pb-missing");
    missing.textContent = "";
    if (view.missing_fields.length) {
      var fields = document.createElement("li");
      fields.dataset.missing = "fields";
      fields.textContent = config.text.missingFields.replace("{fields}", view.missing_fields.map(function (field) {
        return "«" + field.label + "»";
      }).join(", "));
      missing.appendChild(fields);
    }
    if (view.needs_task && !view.has_open_task) {
      var task = document.createElement("li");
      task.dataset.missing = "task";
      task.textContent = config.text.noTask;
      missing.appendChild(task);
    }
    show("rc-pb-missing-box", missing.children.length > 0);
    show("rc-pb-ready", view.ready);
    renderWaiting(view.waiting);
    if (view.waiting) {
      state.textContent = "";
    } else if (view.stage.semantics !== "process") {
      state.textContent = config.text.final;
    } else {
      state.textContent = view.steps || view.criteria ? "" : config.text.none;
    }
  }

  // A deal in «Условный отказ» or «Отложено»: what applies there instead of a next stage.
  function renderWaiting(waiting) {
    var box = document.getElementById("rc-pb-waiting");
    box.dataset.kind = waiting ? waiting.kind : "";
    show("rc-pb-waiting", Boolean(waiting));
    if (!waiting) { return; }
    document.getElementById("rc-pb-waiting-title").textContent = waiting.title;
    var facts = document.getElementById("rc-pb-waiting-facts");
    facts.textContent = "";
    waiting.facts.forEach(function (fact) {
      var row = document.createElement("div");
      row.dataset.fact = fact.key;
      var term = document.createElement("dt");
      term.textContent = fact.label;
      var value = document.createElement("dd");
      value.textContent = fact.value;
      row.appendChild(term);
      row.appendChild(value);
      facts.appendChild(row);
    });
    var next = document.getElementById("rc-pb-waiting-next");
    next.textContent = "";
    waiting.next.forEach(function (line) {
      var item = document.createElement("li");
      item.textContent = line;
      next.appendChild(item);
    });
  }

  function load() {
    return window.RC.api(config.token, config.url).then(function (answer) {
      if (!answer.ok) { state.textContent = config.text.failed + " " + window.RC.problem(answer); return; }
      render(answer.body);
    });
  }

  load();
  // A review action on this tab moves the deal on (back to sales, closed): show its stage now and once more when
  // the CRM write has landed, instead of «under QA review» under a finished review.
  document.addEventListener("rc:deal-changed", function () {
    load();
    window.setTimeout(load, 3000);
  });
})();
