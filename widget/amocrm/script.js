// Refusal Control widget for amoCRM / Kommo: a lead-card tab (lcard-0 + card_sdk) that opens our page, the
// main page (QA queue, reports, exchange, settings) in the widget's settings window (`settings`) and in our
// left-menu section (`widget_page` + manifest `left_menu`, rendered by `initMenuPage` into
// #work-area-{widget_code}), and the Digital Pipeline action that runs our robots (digital_pipeline + `dp`).
// The backend address is written in by the build (`make amo-widget`, from PUBLIC_URL).
define([], function () {
  "use strict";
  var BACKEND_URL = "%BACKEND_URL%";

  return function () {
    var self = this;

    function text(key) {
      var tab = self.i18n("tab") || {};
      return tab[key] || key;
    }

    function code() {
      return (self.get_settings() || {}).widget_code;
    }

    function body() {
      return document.getElementById(code());
    }

    function leadId() {
      var card = window.AMOCRM && AMOCRM.data && AMOCRM.data.current_card;
      return card && card.id ? String(card.id) : "";
    }

    function mainText(key) {
      var strings = self.i18n("main") || {};
      return strings[key] || key;
    }

    function show(message, kind, where) {
      var target = where || body();
      if (!target) { return; }
      target.textContent = "";
      var note = document.createElement("p");
      note.className = "rc-widget-" + kind;
      note.textContent = message;
      target.appendChild(note);
    }

    // Our page in a frame inside `target`: the lead's review when `lead` names one, else the main page.
    function openInto(target, lead, title, loading) {
      if (!target || target.querySelector("iframe.rc-widget-frame")) { return; }
      show(loading, "loading", target);
      // $authorizedAjax adds X-Auth-Token: a disposable JWT our backend verifies and never accepts twice.
      self.$authorizedAjax({
        url: BACKEND_URL + "/amocrm/widget/session",
        type: "POST",
        method: "POST",
        contentType: "application/json",
        dataType: "json",
        data: JSON.stringify({ lead_id: lead, widget_code: code() || "" })
      }).then(function (answer) {
        if (!answer || !answer.url) { throw new Error("no url"); }
        target.textContent = "";
        var frame = document.createElement("iframe");
        frame.className = "rc-widget-frame";
        frame.src = answer.url;
        frame.title = title;
        frame.style.width = "100%";
        frame.style.minHeight = "640px";
        frame.style.border = "0";
        target.appendChild(frame);
      }, function () {
        show(text("error"), "error", target);
      });
    }

    function open() {
      openInto(body(), leadId(), text("title"), text("loading"));
    }

    // The main page in a box of its own inside `parent` (the settings window, the left-menu work area).
    function openMain(parent) {
      if (!parent) { return; }
      var box = parent.querySelector(".rc-widget-main");
      if (!box) {
        box = document.createElement("div");
        box.className = "rc-widget-main";
        parent.appendChild(box);
      }
      openInto(box, "", mainText("title"), mainText("loading"));
    }

    // amoCRM passes the settings window's body (jQuery) to `callbacks.settings`; the description area of the
    // window is where a widget puts its own content.
    function settingsArea(modalBody) {
      var node = modalBody && modalBody.jquery ? modalBody[0] : modalBody;
      if (node && node.querySelector) {
        return node.querySelector(".widget-settings__desc-space") || node;
      }
      return document.querySelector(".widget-settings__desc-space");
    }

    // ---- Digital Pipeline: the action form (manifest `dp.settings`) amoCRM shows for our widget.
    // The manifest is shared by every account, so the webhook URL carries no secret: the form's hidden
    // `secret` field gets the account's secret from our backend (an admin's disposable token), and amoCRM
    // sends it back with every action. The `robot` text field becomes a list of our robots.

    function dpText(key) {
      var strings = self.i18n("dp_form") || {};
      return strings[key] || key;
    }

    function dpForm() {
      var forms = document.querySelectorAll('[data-action="send_widget_hook"]');
      for (var i = 0; i < forms.length; i += 1) {
        if (forms[i].querySelector('input[name="robot"]') && forms[i].querySelector('input[name="secret"]')) {
          return forms[i];
        }
      }
      return null;
    }

    function fieldRow(input) {
      return (input.closest && input.closest(".widget_settings_block__item_field")) || input.parentNode;
    }

    function setValue(input, value) {
      input.value = value;
      input.dispatchEvent(new Event("input", { bubbles: true }));
      input.dispatchEvent(new Event("change", { bubbles: true }));
    }

    function dpNotice(form, message, kind) {
      var old = form.querySelector(".rc-dp-notice");
      if (old) { old.parentNode.removeChild(old); }
      if (!message) { return; }
      var note = document.createElement("p");
      note.className = "rc-dp-notice rc-dp-" + kind;
      note.textContent = message;
      form.insertBefore(note, form.firstChild);
    }

    function robotSelect(robots, current, onChange) {
      var select = document.createElement("select");
      select.className = "rc-dp-robot";
      var options = [{ code: "", name: dpText("choose") }].concat(robots);
      options.forEach(function (robot) {
        var option = document.createElement("option");
        option.value = robot.code;
        option.textContent = robot.name;
        select.appendChild(option);
      });
      select.value = current;
      if (select.value !== current) { select.value = ""; }
      select.addEventListener("change", function () { onChange(select.value); });
      return select;
    }

    function setUpDpForm() {
      var form = dpForm();
      if (!form || form.getAttribute("data-rc-ready")) { return; }
      form.setAttribute("data-rc-ready", "1");
      var robotInput = form.querySelector('input[name="robot"]');
      var secretInput = form.querySelector('input[name="secret"]');
      fieldRow(secretInput).style.display = "none";
      dpNotice(form, dpText("loading"), "loading");
      self.$authorizedAjax({
        url: BACKEND_URL + "/amocrm/widget/dp",
        type: "POST",
        method: "POST",
        contentType: "application/json",
        dataType: "json",
        data: "{}"
      }).then(function (answer) {
        if (!answer || !answer.secret || !answer.robots) { throw new Error("no secret"); }
        setValue(secretInput, answer.secret);
        var select = robotSelect(answer.robots, robotInput.value, function (code) { setValue(robotInput, code); });
        robotInput.style.display = "none";
        robotInput.parentNode.insertBefore(select, robotInput.nextSibling);
        dpNotice(form, "", "");
      }).then(null, function () {
        form.removeAttribute("data-rc-ready");
        dpNotice(form, dpText("error"), "error");
      });
    }

    function onTabClick(event) {
      var tab = event.target.closest && event.target.closest(".card-tabs__item");
      if (tab && tab.getAttribute("data-id") === code()) { open(); }
    }

    this.callbacks = {
      render: function () { return true; },
      init: function () { return true; },
      bind_actions: function () {
        if (self.system().area === "lcard") {
          document.removeEventListener("click", onTabClick, true);
          document.addEventListener("click", onTabClick, true);
        }
        return true;
      },
      settings: function (modalBody) {
        openMain(settingsArea(modalBody));
        return true;
      },
      // The left-menu section (manifest `left_menu`): amoCRM opens its page and calls this with
      // {location: "widget_page", item_code, subitem_code}; the page's body is #work-area-{widget_code}.
      initMenuPage: function (params) {
        if (params && params.location && params.location !== "widget_page") { return true; }
        openMain(document.getElementById("work-area-" + code()));
        return true;
      },
      dpSettings: function () {
        setUpDpForm();
        return true;
      },
      onSave: function () { return true; },
      destroy: function () { document.removeEventListener("click", onTabClick, true); },
      // Card SDK: the tab has no linked items of its own; its content is our page.
      loadPreloadedData: function () { return Promise.resolve([]); },
      loadElements: function () { return Promise.resolve([]); },
      linkCard: function () { return Promise.resolve(); },
      searchDataInCard: function () { return Promise.resolve([]); }
    };
    return this;
  };
});
