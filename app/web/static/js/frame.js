// Shared by every page in the CRM frame, loaded before the pages' own scripts (after BX24.js on Bitrix24
// pages). Inside Bitrix24: BX24.init, then the frame is fitted to the content after render and on every
// change of its height; deal links open in Bitrix24's slider (BX24.openPath) and the app's own pages through
// BX24.openApplication. Without BX24 (amoCRM, or the library did not load) links stay plain links that
// leave the frame (target=_top).
(function () {
  "use strict";
  var DEAL_PATH = /^\/crm\/deal\/details\/\d+\/?$/;
  var bx = null;
  var waiting = [];
  var lastHeight = -1;
  var scheduled = false;

  function available() {
    return Boolean(window.BX24 && typeof window.BX24.init === "function");
  }

  function whenReady(callback) {
    if (bx) { callback(bx); } else if (available()) { waiting.push(callback); }
  }

  // The frame's height follows the content both ways: measured on the body (the document's scroll height never
  // drops below the frame's own height, so BX24.fitWindow alone would only ever grow it).
  function fit() {
    if (!bx || scheduled) { return; }
    scheduled = true;
    window.requestAnimationFrame(function () {
      scheduled = false;
      var height = Math.ceil(document.body.getBoundingClientRect().height);
      if (height <= 0 || height === lastHeight) { return; }
      lastHeight = height;
      bx.resizeWindow(document.documentElement.clientWidth || window.innerWidth, height);
    });
  }

  // A deal link's portal path (/crm/deal/details/12/), or null for any other link.
  function dealPath(href) {
    var url;
    try { url = new URL(href, window.location.href); } catch (error) { return null; }
    return DEAL_PATH.test(url.pathname) ? url.pathname : null;
  }

  function openDeal(href) {
    var path = dealPath(href);
    if (!bx || !path) { return false; }
    bx.openPath(path);
    return true;
  }

  function openApp(options) {
    if (!bx || typeof bx.openApplication !== "function") { return false; }
    bx.openApplication(options || {});
    return true;
  }

  // Marks a deal link made by a page script: the slider inside Bitrix24, a whole-window link elsewhere.
  function dealLink(anchor) {
    anchor.setAttribute("data-rc-deal", "");
    if (!available()) { anchor.target = "_top"; }
    return anchor;
  }

  document.addEventListener("click", function (event) {
    if (event.defaultPrevented || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) { return; }
    var anchor = event.target.closest ? event.target.closest("a[href]") : null;
    if (anchor && openDeal(anchor.href)) { event.preventDefault(); return; }
    var app = event.target.closest ? event.target.closest("[data-rc-open-app]") : null;
    if (app && openApp(JSON.parse(app.getAttribute("data-rc-open-app") || "{}"))) { event.preventDefault(); }
  });

  if (available()) {
    document.body.setAttribute("data-bx24", "loading");
    window.BX24.init(function () {
      bx = window.BX24;
      document.body.setAttribute("data-bx24", "ready");
      document.querySelectorAll("[data-rc-when-bx24]").forEach(function (node) { node.hidden = false; });
      waiting.splice(0).forEach(function (callback) { callback(bx); });
      fit();
      if (window.ResizeObserver) { new window.ResizeObserver(fit).observe(document.body); }
      window.addEventListener("load", fit);
    });
  }

  window.RCFrame = { whenReady: whenReady, fit: fit, openDeal: openDeal, openApp: openApp, dealLink: dealLink, dealPath: dealPath };
})();
