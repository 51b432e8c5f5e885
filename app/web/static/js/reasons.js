// The refusal-reason editor on the settings tab (admins): rename, reorder, retire, restore, add.
(function () {
  "use strict";
  var node = document.getElementById("rc-reasons-config");
  if (!node) { return; }
  var config = JSON.parse(node.textContent);
  var text = config.text;
  var table = document.getElementById("rc-reasons-table");
  var addForm = document.getElementById("rc-reasons-add");
  var result = document.getElementById("rc-reasons-result");
  var loaded = false;
  var current = [];

  function api(url, options) {
    return window.RC.api(config.token, url, options);
  }

  function send(url, method, body) {
    var options = { method: method };
    if (body !== undefined) {
      options.headers = { "Content-Type": "application/json" };
      options.body = JSON.stringify(body);
    }
    return api(url, options).then(function (answer) {
      if (!answer.ok) {
        result.textContent = answer.body.message || String(answer.status);
        result.dataset.state = "error";
        return false;
      }
      result.textContent = answer.body.message || "";
      result.dataset.state = answer.body.written === false ? "pending" : "saved";
      render(answer.body.reasons);
      return true;
    });
  }

  function el(tag, attrs, children) {
    var element = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") { element.textContent = attrs[key]; } else { element.setAttribute(key, attrs[key]); }
    });
    (children || []).forEach(function (child) { element.appendChild(child); });
    return element;
  }

  function reasonUrl(code, action) {
    return config.url + "/" + encodeURIComponent(code) + (action ? "/" + action : "");
  }

  function move(code, step) {
    var active = current.filter(function (r) { return !r.retired; }).map(function (r) { return r.code; });
    var at = active.indexOf(code);
    var to = at + step;
    if (at < 0 || to < 0 || to >= active.length) { return; }
    active.splice(at, 1);
    active.splice(to, 0, code);
    send(config.url + "/order", "PUT", { codes: active });
  }

  function row(reason, index, activeCount) {
    var ru = el("input", { name: "name_ru", maxlength: "100", "aria-label": text.nameRu });
    var en = el("input", { name: "name_en", maxlength: "100", "aria-label": text.nameEn });
    ru.value = reason.name_ru;
    en.value = reason.name_en;
    var buttons = [];
    var save = el("button", { type: "button", "data-action": "save", text: text.save });
    save.addEventListener("click", function () {
      send(reasonUrl(reason.code), "PUT", { name_ru: ru.value, name_en: en.value });
    });
    buttons.push(save);
    if (!reason.retired) {
      var up = el("button", { type: "button", "data-action": "up", text: text.up });
      var down = el("button", { type: "button", "data-action": "down", text: text.down });
      up.disabled = index === 0;
      down.disabled = index === activeCount - 1;
      up.addEventListener("click", function () { move(reason.code, -1); });
      down.addEventListener("click", function () { move(reason.code, 1); });
      buttons.push(up, down);
    }
    var toggle = el("button", {
      type: "button",
      "data-action": reason.retired ? "restore" : "retire",
      text: reason.retired ? text.restore : text.retire
    });
    toggle.addEventListener("click", function () {
      send(reasonUrl(reason.code, reason.retired ? "restore" : "retire"), "POST");
    });
    buttons.push(toggle);
    var badges = [];
    if (reason.retired) { badges.push(el("span", { "class": "rc-badge", "data-badge": "retired", text: text.retired })); }
    if (reason.from_crm) { badges.push(el("span", { "class": "rc-badge", "data-badge": "crm", text: text.fromCrm })); }
    var tr = el("tr", { "data-code": reason.code }, [
      el("td", {}, [ru].concat(badges)),
      el("td", {}, [en]),
      el("td", {}, buttons)
    ]);
    if (reason.retired) { tr.dataset.retired = "1"; }
    return tr;
  }

  function render(reasons) {
    current = reasons;
    var body = table.querySelector("tbody");
    body.textContent = "";
    var activeCount = reasons.filter(function (r) { return !r.retired; }).length;
    reasons.forEach(function (reason, index) { body.appendChild(row(reason, index, activeCount)); });
  }

  function load() {
    if (loaded) { return; }
    api(config.url).then(function (answer) {
      if (!answer.ok) { result.textContent = text.loadFailed + " " + (answer.body.message || answer.status); return; }
      loaded = true;
      render(answer.body.reasons);
    });
  }

  addForm.addEventListener("submit", function (event) {
    event.preventDefault();
    send(config.url, "POST", { name_ru: addForm.elements.name_ru.value, name_en: addForm.elements.name_en.value })
      .then(function (ok) { if (ok) { addForm.reset(); } });
  });
  var settingsTab = document.querySelector('[data-tab="settings"]');
  if (settingsTab) { settingsTab.addEventListener("click", load); }
  if (settingsTab && settingsTab.getAttribute("aria-selected") === "true") { load(); }
})();
