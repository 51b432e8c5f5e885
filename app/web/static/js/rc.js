// Shared by the pages' scripts, loaded before them: calls to our JSON endpoints with the signed identity
// in the X-RC-Token header and the page's language in X-RC-Lang. Each call resolves to {ok, status, body}
// ({} when the answer is not JSON). A failed answer carries `text` (one sentence in the page's language)
// and, when fields are wrong, `field_errors` ({path: {code, text}}): pages show those, never `message`.
(function () {
  "use strict";

  var language = document.documentElement.lang === "en" ? "en" : "ru";
  var generic = {
    ru: "Не удалось выполнить запрос. Проверьте связь и попробуйте ещё раз.",
    en: "The request failed. Check the connection and try again."
  };

  function api(token, url, options) {
    options = options || {};
    options.headers = Object.assign({ "X-RC-Token": token, "X-RC-Lang": language }, options.headers || {});
    return fetch(url, options).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        return { ok: response.ok, status: response.status, body: body };
      });
    }, function () {
      return { ok: false, status: 0, body: {} };
    });
  }

  // The sentence to show for a failed answer.
  function problem(result) {
    return (result && result.body && result.body.text) || generic[language];
  }

  function labelOf(input) {
    if (!input) { return ""; }
    var label = input.closest("label");
    var holder = label || input.closest("fieldset");
    if (!holder) { return ""; }
    var source = label || holder.querySelector("legend");
    if (!source) { return ""; }
    var copy = source.cloneNode(true);
    copy.querySelectorAll("select, input, textarea, .rc-field-error, [data-list]").forEach(function (node) { node.remove(); });
    return copy.textContent.replace(/\s+/g, " ").trim();
  }

  function clearFields(form) {
    if (!form) { return; }
    form.querySelectorAll(".rc-field-error").forEach(function (node) { node.remove(); });
    form.querySelectorAll("[aria-invalid]").forEach(function (node) { node.removeAttribute("aria-invalid"); });
  }

  // Mark each wrong field of `form` with its sentence; `locate(path)` finds a field's element (default: by
  // the path's last part as a name, or a [data-picker]/[data-list] of that name). Returns one line per field
  // ("Label: sentence") for a summary.
  function markFields(form, result, locate) {
    clearFields(form);
    var errors = (result.body && result.body.field_errors) || {};
    return Object.keys(errors).map(function (path) {
      var name = path.split(".").pop();
      var target = locate ? locate(path) : null;
      if (!target && form) {
        target = form.querySelector('[name="' + name + '"]') || form.querySelector('[data-picker="' + name + '"]') ||
          form.querySelector('[data-list="' + name + '"]') || form.querySelector('[data-amounts="' + name + '"]');
      }
      var sentence = errors[path].text;
      var label = labelOf(target);
      if (target) {
        target.setAttribute("aria-invalid", "true");
        var note = document.createElement("span");
        note.className = "rc-field-error";
        note.dataset.field = path;
        note.dataset.code = errors[path].code;
        note.textContent = sentence;
        var anchor = target.closest("label") || target;
        anchor.insertAdjacentElement("afterend", note);
      }
      return label ? label + ": " + sentence : sentence;
    });
  }

  // The whole outcome of a failed save: `prefix` («Исправьте ошибки:») with each field, or the answer's sentence.
  function explain(form, result, prefix, locate) {
    var lines = markFields(form, result, locate);
    if (lines.length) { return prefix + " " + lines.join(" · "); }
    return problem(result);
  }

  window.RC = { api: api, problem: problem, explain: explain, clearFields: clearFields, language: language };
})();
