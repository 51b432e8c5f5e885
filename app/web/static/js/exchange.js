// The lead exchange tab (pool deals, take, return) and, for admins, routing settings and the duty rota.
(function () {
  "use strict";
  var node = document.getElementById("rc-exchange-config");
  if (!node) { return; }
  var config = JSON.parse(node.textContent);
  var text = config.text;

  function api(url, options) {
    options = options || {};
    options.headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
    return window.RC.api(config.token, url, options);
  }

  function el(tag, attrs, children) {
    var item = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { item.textContent = attrs[key]; } else { item.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { item.appendChild(child); });
    return item;
  }

  function say(id, message, outcome) {
    var box = document.getElementById(id);
    box.textContent = message;
    box.dataset.outcome = outcome;
  }

  // ---- the exchange tab
  var filters = document.getElementById("rc-exchange-filters");

  function dealCell(lot) {
    return el("td", {}, [window.RCFrame.dealLink(el("a", { href: lot.url, text: lot.title || ("#" + lot.deal_id) }))]);
  }

  var sourcesFilled = false;

  function fillSources(sources) {
    if (sourcesFilled) { return; }
    sourcesFilled = true;
    var select = filters.elements.source;
    sources.forEach(function (source) { select.appendChild(el("option", { value: source.id, text: source.name })); });
  }

  function loadLots() {
    var params = new URLSearchParams();
    ["source", "min_amount", "max_amount"].forEach(function (name) {
      var value = filters.elements[name].value.trim();
      if (value) { params.set(name, value); }
    });
    return api(config.lotsUrl + "?" + params.toString()).then(function (result) {
      if (!result.ok) { say("rc-exchange-result", window.RC.problem(result), "error"); return; }
      fillSources(result.body.sources || []);
      var body = document.querySelector("#rc-exchange-lots tbody");
      body.textContent = "";
      result.body.lots.forEach(function (lot) {
        var take = el("button", { type: "button", "data-take": lot.id, text: text.take });
        take.addEventListener("click", function () { claim(lot.id); });
        body.appendChild(el("tr", { "data-lot": lot.id }, [
          dealCell(lot), el("td", { "data-class": lot.abc_class, text: lot.abc_class || "—" }),
          el("td", { text: lot.pooled_text }), el("td", { text: lot.amount_text }),
          el("td", { text: lot.source_name }), el("td", {}, [take])
        ]));
      });
      document.getElementById("rc-exchange-empty").hidden = result.body.lots.length > 0;
      var mine = document.querySelector("#rc-exchange-mine tbody");
      mine.textContent = "";
      result.body.mine.forEach(function (lot) {
        var reason = el("input", { type: "text", name: "reason", placeholder: text.reason, "aria-label": text.reason });
        var give = el("button", { type: "button", "data-return": lot.id, text: text.give_back });
        give.addEventListener("click", function () { giveBack(lot.id, reason.value); });
        mine.appendChild(el("tr", { "data-lot": lot.id }, [
          dealCell(lot), el("td", { "data-class": lot.abc_class, text: lot.abc_class || "—" }),
          el("td", { text: lot.amount_text }), el("td", {}, [reason, give])
        ]));
      });
      document.getElementById("rc-exchange-mine-empty").hidden = result.body.mine.length > 0;
    });
  }

  function claim(lotId) {
    api(config.lotUrl + "/" + lotId + "/claim", { method: "POST" }).then(function (result) {
      say("rc-exchange-result", result.ok ? text.taken : window.RC.problem(result), result.ok ? "taken" : "refused");
      loadLots();
    });
  }

  function giveBack(lotId, reason) {
    api(config.lotUrl + "/" + lotId + "/return", { method: "POST", body: JSON.stringify({ reason: reason }) }).then(function (result) {
      say("rc-exchange-result", result.ok ? text.returned : window.RC.problem(result), result.ok ? "returned" : "refused");
      loadLots();
    });
  }

  filters.addEventListener("submit", function (event) { event.preventDefault(); loadLots(); });
  filters.elements.source.addEventListener("change", loadLots);
  var exchangeTab = document.querySelector('[data-tab="exchange"]');
  if (exchangeTab) { exchangeTab.addEventListener("click", loadLots); }

  // ---- settings (admins)
  var form = document.getElementById("rc-exchange-settings");
  var rotaForm = document.getElementById("rc-rota");
  if (!form || !config.isAdmin) { return; }
  var loaded = false;
  var choices = { users: [], departments: [], sources: [] };

  function options(select, items, selected, withNone) {
    select.textContent = "";
    if (withNone) { select.appendChild(el("option", { value: "", text: text.none })); }
    items.forEach(function (item) {
      var option = el("option", { value: item.id, text: item.name });
      option.selected = String(selected) === String(item.id);
      select.appendChild(option);
    });
  }

  function pipelineBlock(pipeline, current) {
    var block = document.getElementById("rc-exchange-pipeline").content.firstElementChild.cloneNode(true);
    block.dataset.pipeline = pipeline.id;
    block.querySelector("legend").textContent = pipeline.name;
    var modes = Object.keys(text.modes).map(function (key) { return { id: key, name: text.modes[key] }; });
    var routes = Object.keys(text.routes).map(function (key) { return { id: key, name: text.routes[key] }; });
    options(block.querySelector('[name="mode"]'), modes, current.mode || "off", false);
    options(block.querySelector('[name="commercial_route"]'), routes, current.commercial_route || "head", false);
    options(block.querySelector('[name="pool_user"]'), choices.users, current.pool_user, true);
    ["duty_department", "commercial_department"].forEach(function (name) {
      options(block.querySelector('[name="' + name + '"]'), choices.departments, current[name], true);
    });
    block.querySelector('[name="cap"]').value = current.cap || 20;
    block.querySelector('[name="idle_days"]').value = current.idle_days || 3;
    var chosen = current.incoming_sources || [];
    var list = block.querySelector('[data-list="incoming_sources"]');
    choices.sources.concat(chosen.filter(function (id) {
      return !choices.sources.some(function (source) { return source.id === id; });
    }).map(function (id) { return { id: id, name: id }; })).forEach(function (source) {
      var box = el("input", { type: "checkbox", name: "incoming_sources", value: source.id });
      box.checked = chosen.indexOf(source.id) >= 0;
      list.appendChild(el("label", { class: "rc-choice" }, [box, document.createTextNode(" " + source.name)]));
    });
    block.querySelector('[name="large_threshold"]').value = current.large_threshold || "";
    return block;
  }

  function loadSettings() {
    if (loaded) { return; }
    loaded = true;
    api(config.settingsUrl).then(function (result) {
      if (!result.ok) { loaded = false; say("rc-exchange-settings-result", window.RC.problem(result), "error"); return; }
      choices.users = result.body.users.filter(function (u) { return u.active; });
      choices.departments = result.body.departments;
      choices.sources = result.body.sources || [];
      var list = form.querySelector('[data-list="exchange-pipelines"]');
      list.textContent = "";
      result.body.pipelines.forEach(function (pipeline) {
        list.appendChild(pipelineBlock(pipeline, result.body.settings.pipelines[pipeline.id] || {}));
      });
      // The rota opens on the department a pipeline routes to the manager on duty (the one being planned).
      var routed = result.body.pipelines.map(function (pipeline) {
        return result.body.settings.pipelines[pipeline.id] || {};
      }).filter(function (current) { return current.mode === "duty" && current.duty_department; });
      options(rotaForm.elements.department_id, choices.departments, routed.length ? routed[0].duty_department : "", false);
      monthOptions(rotaForm.elements.month);
      loadRota();
    });
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var pipelines = {};
    form.querySelectorAll("[data-pipeline]").forEach(function (block) {
      var value = function (name) { return block.querySelector('[name="' + name + '"]').value.trim(); };
      pipelines[block.dataset.pipeline] = {
        mode: value("mode"),
        pool_user: value("pool_user") || null,
        cap: Number(value("cap")),
        idle_days: Number(value("idle_days")),
        incoming_sources: Array.prototype.map.call(block.querySelectorAll('input[name="incoming_sources"]:checked'), function (box) { return box.value; }),
        duty_department: value("duty_department") || null,
        large_threshold: value("large_threshold") || null,
        commercial_department: value("commercial_department") || null,
        commercial_route: value("commercial_route")
      };
    });
    api(config.settingsUrl, { method: "PUT", body: JSON.stringify({ pipelines: pipelines }) }).then(function (result) {
      if (result.ok) { window.RC.clearFields(form); say("rc-exchange-settings-result", text.exchangeSaved, "saved"); return; }
      say("rc-exchange-settings-result", window.RC.explain(form, result, text.invalid, function (path) {
        var parts = path.split(".");
        if (parts[0] !== "pipelines" || parts.length < 3) { return null; }
        var block = form.querySelector('[data-pipeline="' + parts[1] + '"]');
        return block ? block.querySelector('[name="' + parts[2] + '"]') || block.querySelector('[data-name="' + parts[2] + '"]') : null;
      }), "invalid");
    });
  });

  // Months by name («Декабрь 2026»), from two months back to a year ahead; the portal's current month first chosen.
  function monthOptions(select) {
    if (select.options.length) { return; }
    var names = text.months.split(" ");
    var year = Number(config.today.slice(0, 4));
    var month = Number(config.today.slice(5, 7)) - 1;
    for (var shift = -2; shift <= 12; shift += 1) {
      var index = year * 12 + month + shift;
      var value = Math.floor(index / 12) + "-" + (index % 12 < 9 ? "0" : "") + (index % 12 + 1);
      var option = el("option", { value: value, text: names[index % 12] + " " + Math.floor(index / 12) });
      option.selected = shift === 0;
      select.appendChild(option);
    }
  }

  function loadRota() {
    var department = rotaForm.elements.department_id.value;
    var month = rotaForm.elements.month.value;
    if (!department || !month) { return; }
    api(config.rotaUrl + "?department_id=" + encodeURIComponent(department) + "&month=" + month).then(function (result) {
      var list = rotaForm.querySelector('[data-list="rota-days"]');
      list.textContent = "";
      if (!result.ok) { say("rc-rota-result", window.RC.problem(result), "error"); return; }
      // A month calendar: weeks from Monday, each day its number, its weekday and who is on duty; today marked.
      var parts = month.split("-").map(Number);
      var days = new Date(parts[0], parts[1], 0).getDate();
      var offset = (new Date(parts[0], parts[1] - 1, 1).getDay() + 6) % 7;
      var weekdays = text.weekdays.split(" ");
      var calendar = el("table", { class: "rc-table rc-rota-calendar" });
      calendar.appendChild(el("thead", {}, [el("tr", {}, weekdays.map(function (name) { return el("th", { scope: "col", text: name }); }))]));
      var body = el("tbody");
      var row = el("tr");
      for (var blank = 0; blank < offset; blank += 1) { row.appendChild(el("td", { class: "rc-rota-blank" })); }
      for (var day = 1; day <= days; day += 1) {
        var dd = (day < 10 ? "0" : "") + day;
        var iso = month + "-" + dd;
        var weekday = weekdays[(offset + day - 1) % 7];
        var shown = dd + "." + month.slice(5, 7) + "." + month.slice(0, 4);
        var select = el("select", { "data-day": iso, "aria-label": weekday + ", " + shown });
        options(select, choices.users, result.body.days[iso] || "", true);
        select.options[0].textContent = text.nobody;
        var head = el("div", { class: "rc-rota-date", text: String(day) });
        var cell = el("td", { "data-date": iso }, [head, select]);
        if (iso === config.today) {
          cell.className = "rc-today";
          cell.setAttribute("aria-current", "date");
          head.appendChild(el("span", { class: "rc-today-mark", text: " · " + text.today }));
        }
        row.appendChild(cell);
        if ((offset + day) % 7 === 0) { body.appendChild(row); row = el("tr"); }
      }
      if (row.children.length) { body.appendChild(row); }
      calendar.appendChild(body);
      list.appendChild(calendar);
    });
  }

  rotaForm.elements.department_id.addEventListener("change", loadRota);
  rotaForm.elements.month.addEventListener("change", loadRota);
  rotaForm.addEventListener("submit", function (event) {
    event.preventDefault();
    var days = {};
    rotaForm.querySelectorAll("[data-day]").forEach(function (select) { days[select.dataset.day] = select.value || null; });
    api(config.rotaUrl, {
      method: "PUT",
      body: JSON.stringify({ department_id: rotaForm.elements.department_id.value, days: days })
    }).then(function (result) {
      if (result.ok) {
        window.RC.clearFields(rotaForm);
        var onDuty = Object.keys(days).filter(function (key) { return days[key]; }).length;
        say("rc-rota-result", text.rotaSaved.replace("{days}", onDuty), "saved");
        return;
      }
      say("rc-rota-result", window.RC.explain(rotaForm, result, text.invalid, function (path) {
        return rotaForm.querySelector('[data-day="' + path + '"]');
      }), "invalid");
    });
  });

  var settingsTab = document.querySelector('[data-tab="settings"]');
  if (settingsTab) { settingsTab.addEventListener("click", loadSettings); }
})();
