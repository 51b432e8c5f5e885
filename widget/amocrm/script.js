// Refusal Control widget for amoCRM / Kommo: a lead-card tab (lcard-0 + card_sdk) that opens our page.
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

    function show(message, kind) {
      var target = body();
      if (!target) { return; }
      target.textContent = "";
      var note = document.createElement("p");
      note.className = "rc-widget-" + kind;
      note.textContent = message;
      target.appendChild(note);
    }

    function open() {
      var target = body();
      if (!target || target.querySelector("iframe.rc-widget-frame")) { return; }
      show(text("loading"), "loading");
      // $authorizedAjax adds X-Auth-Token: a disposable JWT our backend verifies and never accepts twice.
      self.$authorizedAjax({
        url: BACKEND_URL + "/amocrm/widget/session",
        type: "POST",
        method: "POST",
        contentType: "application/json",
        dataType: "json",
        data: JSON.stringify({ lead_id: leadId() })
      }).then(function (answer) {
        if (!answer || !answer.url) { throw new Error("no url"); }
        target.textContent = "";
        var frame = document.createElement("iframe");
        frame.className = "rc-widget-frame";
        frame.src = answer.url;
        frame.title = text("title");
        frame.style.width = "100%";
        frame.style.minHeight = "640px";
        frame.style.border = "0";
        target.appendChild(frame);
      }, function () {
        show(text("error"), "error");
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
      settings: function () { return true; },
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
