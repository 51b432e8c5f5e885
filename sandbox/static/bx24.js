/* The sandbox's BX24 library: the subset of Bitrix24's api/v1 that the app uses, speaking the same frame
   protocol to the parent page (the sandbox kanban) as the real library speaks to a portal:
     frame -> parent: "<command>:<JSON params>:<callback id>:<APP_SID>" (postMessage to PROTOCOL://DOMAIN
                      from the frame URL's query), commands getInitData, resizeWindow, openPath,
                      openApplication, closeApplication, setInstallFinish, reloadWindow, setTitle;
     parent -> frame: "<callback id>:<JSON answer>".
   Served at /sandbox/api/v1/; the demo points B24_JS_URL there, so pages and tests work offline. */
(function () {
  "use strict";
  if (window.BX24) { return; }
  var query = new URLSearchParams(window.location.search);
  var domain = (query.get("DOMAIN") || "").replace(/:(80|443)$/, "");
  var origin = (query.get("PROTOCOL") === "0" ? "http" : "https") + "://" + domain;
  var appSid = query.get("APP_SID") || "";
  var callbacks = {};
  var sequence = 0;
  var initData = null;
  var initCallbacks = [];
  var requested = false;

  function send(command, params, callback) {
    sequence += 1;
    var id = "rc" + sequence + "x" + Date.now().toString(36);
    callbacks[id] = callback || null;
    var body = params === undefined || params === null ? "" : JSON.stringify(params);
    window.parent.postMessage(command + ":" + body + ":" + id + ":" + appSid, origin);
  }

  window.addEventListener("message", function (event) {
    if (event.origin !== origin || event.source !== window.parent || typeof event.data !== "string") { return; }
    var colon = event.data.indexOf(":");
    var id = colon < 0 ? event.data : event.data.slice(0, colon);
    if (!Object.prototype.hasOwnProperty.call(callbacks, id)) { return; }
    var raw = colon < 0 ? "" : event.data.slice(colon + 1);
    var answer = raw ? JSON.parse(raw) : undefined;
    var callback = callbacks[id];
    delete callbacks[id];
    if (typeof callback === "function") { callback(answer); }
  });

  function scrollSize() {
    var root = document.documentElement;
    var body = document.body || root;
    return {
      scrollWidth: Math.max(root.scrollWidth, body.scrollWidth),
      scrollHeight: Math.max(root.offsetHeight, body.scrollHeight, body.offsetHeight)
    };
  }

  var BX24 = {
    init: function (callback) {
      if (initData) { if (callback) { callback(); } return; }
      if (callback) { initCallbacks.push(callback); }
      if (requested || window.parent === window) { return; }
      requested = true;
      send("getInitData", null, function (data) {
        initData = data || {};
        initCallbacks.splice(0).forEach(function (each) { each(); });
      });
    },
    isInit: function () { return Boolean(initData); },
    getAuth: function () {
      if (!initData) { return false; }
      return {
        access_token: initData.AUTH_ID, refresh_token: initData.REFRESH_ID,
        expires_in: initData.AUTH_EXPIRES, domain: domain, member_id: initData.MEMBER_ID
      };
    },
    getLang: function () { return (initData && initData.LANG) || query.get("LANG") || "en"; },
    getDomain: function () { return domain; },
    isAdmin: function () { return Boolean(initData && initData.IS_ADMIN); },
    getScrollSize: scrollSize,
    resizeWindow: function (width, height, callback) {
      send("resizeWindow", { width: width, height: height }, callback);
    },
    fitWindow: function (callback) {
      send("resizeWindow", { width: "100%", height: scrollSize().scrollHeight }, callback);
    },
    openPath: function (path, callback) { send("openPath", { path: path }, callback); },
    openApplication: function (params, callback) { send("openApplication", params || {}, callback); },
    closeApplication: function (callback) { send("closeApplication", null, callback); },
    reloadWindow: function () { send("reloadWindow", null, null); },
    setTitle: function (title, callback) { send("setTitle", { title: String(title) }, callback); },
    installFinish: function () { send("setInstallFinish", null, null); },
    placement: {
      info: function () {
        return {
          placement: (initData && initData.PLACEMENT) || "DEFAULT",
          options: (initData && initData.PLACEMENT_OPTIONS) || {}
        };
      }
    }
  };
  window.BX24 = BX24;
})();
