// Install page: polls the installer's progress and calls BX24.installFinish() only after success.
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("rc-config").textContent);
  var result = document.getElementById("rc-result");
  var retry = document.getElementById("rc-retry");
  var finished = false;

  function render(steps) {
    steps.forEach(function (step) {
      var item = document.querySelector('[data-step="' + step.step + '"]');
      if (!item) { return; }
      item.setAttribute("data-state", step.state);
      item.querySelector(".rc-step-state").textContent = config.text[step.state] || step.state;
      item.querySelector(".rc-step-detail").textContent = step.detail ? " (" + step.detail + ")" : "";
    });
  }

  function finishInstall() {
    finished = true;
    result.textContent = config.text.installed;
    result.setAttribute("data-outcome", "installed");
    if (window.BX24 && typeof window.BX24.init === "function") {
      window.BX24.init(function () { window.BX24.installFinish(); });
    }
  }

  function poll() {
    if (finished) { return; }
    fetch(config.statusUrl, { headers: { "X-RC-Token": config.token } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (body) {
        render(body.steps || []);
        if (body.status === "installed") { return finishInstall(); }
        if (body.status === "install_failed") {
          result.textContent = config.text.installFailed + " " + body.detail;
          result.setAttribute("data-outcome", "failed");
          retry.hidden = false;
          return;
        }
        if (body.status === "needs_reinstall") {
          result.textContent = config.text.needsReinstall;
          result.setAttribute("data-outcome", "failed");
          return;
        }
        window.setTimeout(poll, 700);
      })
      .catch(function () {
        result.textContent = config.text.lost;
        window.setTimeout(poll, 2000);
      });
  }

  retry.addEventListener("click", function () {
    retry.hidden = true;
    result.textContent = "";
    result.removeAttribute("data-outcome");
    fetch(config.retryUrl, { method: "POST", headers: { "X-RC-Token": config.token } }).then(poll, poll);
  });

  poll();
})();
