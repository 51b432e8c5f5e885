// Shared by the pages' scripts, loaded before them: calls to our JSON endpoints with the signed identity
// in the X-RC-Token header. Each call resolves to {ok, status, body} ({} when the answer is not JSON).
(function () {
  "use strict";

  function api(token, url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-RC-Token": token }, options.headers || {});
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    });
  }

  window.RC = { api: api };
})();
