// Day-first date fields that read the same in every browser: «08.12.2026» and «08.12.2026 18:48». A native
// <input type="date"> shows the browser's locale (12/08/2026, 6:48 PM), so the pages use text inputs marked
// data-rc-date="date" or "datetime", typed with a mask (the dots, the space and the colon are added as the
// digits come) and checked as a real calendar day. The calendar button opens the browser's own picker
// (showPicker on a hidden native input) and writes its choice back day-first. The page's scripts read and
// write the fields in ISO (2026-12-08, 2026-12-08T18:48) through window.RCDate; the server sees ISO only.
// Each field carries its sentences in data attributes rendered in the page's language (app/web/__init__.py).
(function () {
  "use strict";

  var SHAPES = {
    date: /^(\d{2})\.(\d{2})\.(\d{4})$/,
    datetime: /^(\d{2})\.(\d{2})\.(\d{4}) (\d{2}):(\d{2})$/
  };
  var ISO = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2}))?/;

  function kind(input) { return input.getAttribute("data-rc-date") === "datetime" ? "datetime" : "date"; }

  // «0812202618» -> «08.12.2026 18»: the separators between the digits typed so far.
  function masked(digits, what) {
    var out = "";
    var marks = what === "datetime" ? { 2: ".", 4: ".", 8: " ", 10: ":" } : { 2: ".", 4: "." };
    for (var i = 0; i < digits.length; i += 1) {
      if (marks[i] && i > 0) { out += marks[i]; }
      out += digits.charAt(i);
    }
    return out;
  }

  function pad(number) { return String(number).padStart(2, "0"); }

  // ISO («2026-12-08» or «2026-12-08T18:48») as the field shows it.
  function display(iso, what) {
    var match = ISO.exec(iso || "");
    if (!match) { return ""; }
    var day = match[3] + "." + match[2] + "." + match[1];
    return what === "datetime" ? day + " " + (match[4] || "00") + ":" + (match[5] || "00") : day;
  }

  // The field's value in ISO; "" when empty; null when it is not a real day (and time).
  function iso(input) {
    var value = input.value.trim();
    if (!value) { return ""; }
    var what = kind(input);
    var match = SHAPES[what].exec(value);
    if (!match) { return null; }
    var day = Number(match[1]);
    var month = Number(match[2]);
    var year = Number(match[3]);
    var check = new Date(year, month - 1, day);
    if (year < 1900 || check.getFullYear() !== year || check.getMonth() !== month - 1 || check.getDate() !== day) {
      return null;
    }
    var text = match[3] + "-" + match[2] + "-" + match[1];
    if (what === "datetime") {
      if (Number(match[4]) > 23 || Number(match[5]) > 59) { return null; }
      text += "T" + match[4] + ":" + match[5];
    }
    return text;
  }

  function set(input, value) {
    input.value = display(value, kind(input));
    clear(input);
  }

  function clear(input) {
    input.removeAttribute("aria-invalid");
    var note = input.closest("label") ? input.closest("label").nextElementSibling : null;
    if (note && note.classList.contains("rc-field-error") && note.dataset.field === input.name) { note.remove(); }
  }

  // Whether the field holds a real day (or is empty and not required); else it is marked with its sentence.
  function check(input) {
    clear(input);
    var value = iso(input);
    if (value === null || (value === "" && input.required)) {
      input.setAttribute("aria-invalid", "true");
      var note = document.createElement("span");
      note.className = "rc-field-error";
      note.dataset.field = input.name;
      note.dataset.code = "bad_date";
      note.textContent = input.getAttribute("data-rc-date-invalid") || "";
      (input.closest("label") || input).insertAdjacentElement("afterend", note);
      return false;
    }
    return true;
  }

  function onInput(event) {
    var input = event.target;
    var what = kind(input);
    var value = input.value;
    clear(input);
    var isoValue = ISO.exec(value);
    if (isoValue && isoValue[0] === value.trim()) { input.value = display(value.trim(), what); return; }
    // Only typing at the end is reshaped, so deleting or editing in the middle never fights the user.
    if ((event.inputType || "").indexOf("delete") === 0) { return; }
    if (input.selectionStart !== value.length) { return; }
    var digits = value.replace(/\D/g, "").slice(0, what === "datetime" ? 12 : 8);
    input.value = masked(digits, what);
  }

  var CALENDAR = '<svg viewBox="0 0 16 16" width="16" height="16" aria-hidden="true" focusable="false">' +
    '<rect x="1.5" y="3" width="13" height="11.5" rx="1.5" fill="none" stroke="currentColor"/>' +
    '<path d="M1.5 6.5h13M5 1.5v3M11 1.5v3" stroke="currentColor" fill="none"/></svg>';

  // The calendar button: the browser's own picker on a hidden native input, its choice written day-first.
  function attachPicker(input) {
    var native = document.createElement("input");
    native.type = kind(input) === "datetime" ? "datetime-local" : "date";
    if (typeof native.showPicker !== "function") { return; }
    native.tabIndex = -1;
    native.className = "rc-date-native";
    native.setAttribute("aria-hidden", "true");
    var button = document.createElement("button");
    button.type = "button";
    button.className = "rc-date-pick";
    button.setAttribute("aria-label", input.getAttribute("data-rc-date-pick") || "");
    button.title = input.getAttribute("data-rc-date-pick") || "";
    button.innerHTML = CALENDAR;
    var wrap = document.createElement("span");
    wrap.className = "rc-date";
    input.parentNode.insertBefore(wrap, input);
    wrap.appendChild(input);
    wrap.appendChild(native);
    wrap.appendChild(button);
    button.addEventListener("click", function (event) {
      event.preventDefault();
      var value = iso(input);
      native.value = value ? value : "";
      try { native.showPicker(); } catch (ignored) { input.focus(); }
    });
    native.addEventListener("change", function () {
      if (native.value) { set(input, native.value); input.dispatchEvent(new Event("change", { bubbles: true })); }
    });
  }

  function init(root) {
    (root || document).querySelectorAll("input[data-rc-date]").forEach(function (input) {
      if (input.dataset.rcDateReady) { return; }
      input.dataset.rcDateReady = "1";
      input.autocomplete = "off";
      input.spellcheck = false;
      input.inputMode = "numeric";
      input.maxLength = kind(input) === "datetime" ? 16 : 10;
      input.addEventListener("input", onInput);
      input.addEventListener("blur", function () { if (input.value.trim()) { check(input); } else { clear(input); } });
      attachPicker(input);
    });
  }

  init(document);
  window.RCDate = { iso: iso, set: set, check: check, clear: clear, init: init, display: display };
})();
