// amoCRM lead tab: the button that leaves the lead's review for the main page (QA queue, exchange,
// reports, settings). The server swaps the page's identity token for a fresh single-use ticket.
(function () {
  "use strict";
  var button = document.getElementById("rc-open-app");
  if (!button) { return; }
  button.addEventListener("click", function () {
    button.disabled = true;
    fetch(button.dataset.url, { method: "POST", headers: { "X-RC-Token": button.dataset.token } })
      .then(function (response) {
        return response.json().then(function (body) {
          if (!response.ok || !body.url) { throw new Error("no url"); }
          window.location.assign(body.url);
        });
      })
      .catch(function () {
        button.disabled = false;
        var note = document.createElement("p");
        note.className = "rc-error";
        note.setAttribute("role", "alert");
        note.textContent = button.dataset.failed;
        button.parentNode.appendChild(note);
      });
  });
})();
