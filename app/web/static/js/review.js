// The refusal review tab in the deal card. Identity travels in the X-RC-Token header; recordings are
// fetched through our endpoint (never from the portal directly) and played from a local blob.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-config").textContent);
  var view = null;
  var busy = false;

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function text(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value === undefined || value === null || value === "" ? "—" : value; }
  }

  function options(select, items, selected, extra) {
    select.textContent = "";
    (extra || []).concat(items).forEach(function (item) {
      var option = document.createElement("option");
      option.value = item.id;
      option.textContent = item.name;
      option.selected = item.id === selected;
      select.appendChild(option);
    });
  }

  function fillChoices() {
    var c = view.choices;
    document.querySelectorAll("select[data-choices]").forEach(function (select) {
      var kind = select.dataset.choices;
      if (kind === "stages") { options(select, c.stages, c.default_stage); }
      if (kind === "assignees") { options(select, c.assignees, c.default_assignee); }
      if (kind === "managers") { options(select, c.managers, "", [{ id: "", name: config.text.roundRobin }]); }
      if (kind === "reasons") {
        options(select, c.reasons.map(function (r) { return { id: r.code, name: r.name }; }), view.case.reason);
      }
    });
    var at = document.querySelector('input[name="at"]');
    if (!at.value) { window.RCDate.set(at, c.now_local); }
  }

  function renderFacts() {
    var k = view.case;
    text("f-state", k.state_label);
    text("f-manager", k.manager.name);
    text("f-reason", k.reason_label);
    text("f-comment", k.comment);
    text("f-in_refusal", k.in_refusal);
    text("f-amount", k.amount);
    text("f-source", k.source);
    text("f-cpl", k.cpl_rule ? k.cpl + " (" + k.cpl_rule + ")" : k.cpl);
    text("f-qa", k.qa_user.name);
    text("f-due", k.due_at);
    text("f-verdict", k.verdict);
    var cb = view.callback;
    text("f-next_callback", cb ? cb.at + " · " + cb.assignee.name + " · " + config.text.unanswered + ": " +
      k.unanswered + "/" + k.attempts : (k.unanswered ? config.text.unanswered + ": " + k.unanswered + "/" + k.attempts : ""));
    document.querySelector('[data-fact="due"]').classList.toggle("rc-overdue", k.overdue);
    document.querySelector(".rc-facts").hidden = false;
  }

  function renderActions() {
    var allowed = view.actions;
    document.querySelectorAll("form.rc-action").forEach(function (form) {
      var any = false;
      form.querySelectorAll("button[data-action]").forEach(function (button) {
        var on = allowed.indexOf(button.dataset.action) >= 0;
        button.hidden = !on;
        button.disabled = false;
        any = any || on;
      });
      var sub = form.querySelector(".rc-sub");
      if (sub) { sub.hidden = allowed.indexOf("client_denies") < 0; }
      form.hidden = !any;
    });
    var reviewer = view.role === "qa" || view.role === "head";
    document.getElementById("rc-read-only").hidden = reviewer || !view.case.open;
    document.getElementById("rc-closed").hidden = view.case.open;
    document.getElementById("rc-summary").textContent = view.case.summary || "";
    var next = document.getElementById("rc-next-step");
    next.hidden = !view.case.next_step;
    next.querySelector("span").textContent = view.case.next_step || "";
  }

  function play(call, item) {
    var button = item.querySelector("button");
    button.disabled = true;
    fetch(config.recordingUrl.replace("CALL", encodeURIComponent(call.id)), { headers: { "X-RC-Token": config.token, "X-RC-Lang": window.RC.language } })
      .then(function (response) {
        if (!response.ok) {
          return response.json().catch(function () { return {}; }).then(function (body) {
            throw new Error(window.RC.problem({ body: body }));
          });
        }
        return response.blob();
      })
      .then(function (blob) {
        var audio = document.createElement("audio");
        audio.controls = true;
        audio.src = URL.createObjectURL(blob);
        audio.setAttribute("aria-label", config.text.play + " " + call.started_at);
        item.appendChild(audio);
        button.hidden = true;
        audio.play().catch(function () { /* autoplay may be blocked; the controls are there */ });
      })
      .catch(function (error) {
        button.disabled = false;
        var note = document.createElement("span");
        note.className = "rc-error";
        note.textContent = " " + config.text.failed + " " + error.message;
        item.appendChild(note);
      });
  }

  function renderCalls() {
    var list = document.getElementById("rc-calls");
    list.textContent = "";
    if (!view.calls.length) {
      var empty = document.createElement("li");
      empty.className = "rc-note";
      empty.textContent = config.text.noCalls;
      list.appendChild(empty);
      return;
    }
    view.calls.forEach(function (call) {
      var item = document.createElement("li");
      item.dataset.call = call.id;
      var label = document.createElement("span");
      label.textContent = [call.started_at, call.direction === "in" ? config.text.incoming : config.text.outgoing,
        call.duration, call.user.name, call.phone].filter(Boolean).join(" · ");
      item.appendChild(label);
      if (call.playable) {
        var button = document.createElement("button");
        button.type = "button";
        button.textContent = config.text.play;
        button.addEventListener("click", function () { play(call, item); });
        item.appendChild(document.createTextNode(" "));
        item.appendChild(button);
      } else if (!call.has_recording) {
        var none = document.createElement("span");
        none.className = "rc-note";
        none.textContent = " (" + config.text.noRecording + ")";
        item.appendChild(none);
      }
      list.appendChild(item);
    });
  }

  function renderTimeline() {
    var list = document.getElementById("rc-timeline");
    list.textContent = "";
    view.timeline.forEach(function (step) {
      var item = document.createElement("li");
      item.dataset.action = step.action;
      item.textContent = step.at + " · " + step.actor + " · " + step.action_label + (step.note ? " — " + step.note : "");
      list.appendChild(item);
    });
  }

  function load() {
    return api(config.caseUrl).then(function (result) {
      var state = document.getElementById("rc-review-state");
      if (!result.ok) {
        state.textContent = config.text.loadFailed + " " + window.RC.problem(result);
        return;
      }
      view = result.body;
      state.textContent = "";
      state.hidden = true;
      renderFacts();
      fillChoices();
      renderActions();
      renderCalls();
      renderTimeline();
    });
  }

  // `strict`: the action needs the form's day-first date fields (sent in ISO); a wrong one stops it with its sentence.
  function submit(form, action, strict) {
    if (busy) { return; }
    var params = {};
    var note = "";
    var wrong = null;
    Array.prototype.forEach.call(form.elements, function (element) {
      if (!element.name || element.closest("[hidden]")) { return; }
      if (element.hasAttribute("data-rc-date")) {
        if (strict && !window.RCDate.check(element)) { wrong = wrong || element; return; }
        params[element.name] = window.RCDate.iso(element) || element.value;
      } else if (element.name === "note") { note = element.value; } else { params[element.name] = element.value; }
    });
    var result = document.getElementById("rc-action-result");
    if (wrong) {
      result.dataset.outcome = "failed";
      result.textContent = config.text.failed + " " + wrong.getAttribute("data-rc-date-invalid");
      wrong.focus();
      return;
    }
    busy = true;
    form.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
    api(config.actionUrl.replace("ACTION", action), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ version: view.version, expected: view.expected, note: note, params: params })
    }).then(function (response) {
      busy = false;
      result.dataset.outcome = response.ok ? "done" : "failed";
      result.textContent = response.ok ? (response.body.text || config.text.done) : config.text.failed + " " + window.RC.problem(response);
      if (response.ok) {
        form.reset();
        document.dispatchEvent(new CustomEvent("rc:deal-changed"));  // the stage section below reloads
      }
      // A refused action keeps what the user entered; only a case or deal that moved on is reloaded.
      if (!response.ok && response.status !== 409) {
        form.querySelectorAll("button").forEach(function (button) { button.disabled = false; });
        return null;
      }
      return load();
    }).catch(function () { busy = false; });
  }

  document.querySelectorAll("form.rc-action").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = event.submitter;
      if (button && button.dataset.action) { submit(form, button.dataset.action, !button.formNoValidate); }
    });
  });

  load();
})();
