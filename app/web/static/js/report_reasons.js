// The reports tab: filter the list of refusal comments by reason and manager (the period is the report's own).
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var select = event.target.closest ? event.target.closest("[data-comments-filter]") : null;
    if (!select) { return; }
    var box = document.getElementById("rc-comments-filters");
    var table = document.getElementById("rc-table-comments");
    if (!box || !table) { return; }
    var wanted = {};
    box.querySelectorAll("[data-comments-filter]").forEach(function (s) { wanted[s.dataset.commentsFilter] = s.value; });
    table.querySelectorAll("tbody tr").forEach(function (row) {
      var show = (!wanted.reason || row.dataset.reason === wanted.reason) &&
        (!wanted.manager || row.dataset.manager === wanted.manager);
      row.hidden = !show;
    });
  });
})();
