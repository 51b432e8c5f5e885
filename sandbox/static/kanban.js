/* The sandbox kanban: polls the board once a second, moves cards by drag and drop or the "Move to…" select,
   edits a deal's user fields, and lists the notifications the acting user received. */
(function () {
  "use strict";
  var config = JSON.parse(document.getElementById("sb-config").textContent);
  var t = config.strings;
  var query = new URLSearchParams(window.location.search);
  var state = {
    user: query.get("user") || window.localStorage.getItem("sb-user") || "2",
    pipeline: query.get("pipeline") || window.localStorage.getItem("sb-pipeline") || "0",
    portal: query.get("portal") || "",
    openDeal: query.get("deal") || "",
    board: null,
    boardKey: "",
    noticesKey: "",
    stages: {},
    seenNotices: null,
    dragging: false,
    editing: null
  };
  var userSelect = document.getElementById("sb-user");
  var pipelineSelect = document.getElementById("sb-pipeline");
  var boardEl = document.getElementById("sb-board");
  var noticesEl = document.getElementById("sb-notices");
  var tasksEl = document.getElementById("sb-tasks");
  var statusEl = document.getElementById("sb-status");
  var editor = document.getElementById("sb-editor");
  var number = new Intl.NumberFormat(config.lang === "en" ? "en-US" : "ru-RU", { maximumFractionDigits: 2 });
  var SYMBOLS = { RUB: "₽", USD: "$", EUR: "€" };

  // «1 200 000 ₽», as the app writes money (₽/$/€, else the ISO code).
  function money(amount, currency) {
    return number.format(Number(amount)).replace(/\u202f/g, "\u00a0") + "\u00a0" + (SYMBOLS[currency] || currency);
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined && text !== null) { node.textContent = text; }
    return node;
  }

  function params(extra) {
    var p = new URLSearchParams({ user: state.user, pipeline: state.pipeline, lang: config.lang });
    if (state.portal) { p.set("portal", state.portal); }
    Object.keys(extra || {}).forEach(function (k) { p.set(k, extra[k]); });
    return p.toString();
  }

  function post(url, body) {
    var target = state.portal ? url + "?portal=" + encodeURIComponent(state.portal) : url;
    return fetch(target, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) {
        if (!response.ok) { throw new Error(data.message || response.statusText); }
        return data;
      });
    });
  }

  function showStatus(text, installed) {
    statusEl.textContent = text;
    statusEl.setAttribute("data-installed", installed ? "yes" : "no");
  }

  function fillSelect(select, options, value) {
    var key = JSON.stringify(options) + value;
    if (select.getAttribute("data-key") === key) { return; }
    select.setAttribute("data-key", key);
    select.innerHTML = "";
    options.forEach(function (option) {
      var node = el("option", { value: option.value }, option.label);
      if (option.value === value) { node.selected = true; }
      select.appendChild(node);
    });
  }

  function move(dealId, stageId) {
    return post(config.move, { user: state.user, deal_id: dealId, stage_id: stageId })
      .catch(function (error) { showStatus(t.kanban_failed + " " + error.message, false); })
      .then(refresh);
  }

  function card(deal, stages) {
    var item = el("li", { "class": "sb-card", draggable: "true", "data-deal-id": deal.id, "data-stage": deal.stage_id });
    item.appendChild(el("div", { "class": "sb-title" }, deal.title));
    item.appendChild(el("div", {}, money(deal.amount, deal.currency)));
    item.appendChild(el("div", { "class": "sb-muted" }, t.kanban_responsible + ": " + deal.responsible));
    var select = el("select", { "aria-label": t.kanban_move_to + " " + deal.title, "class": "sb-move" });
    select.appendChild(el("option", { value: "" }, t.kanban_move_to));
    stages.forEach(function (stage) {
      if (stage.id !== deal.stage_id) { select.appendChild(el("option", { value: stage.id }, stage.name)); }
    });
    select.addEventListener("change", function () { if (select.value) { move(deal.id, select.value); } });
    item.appendChild(select);
    var open = el("button", { type: "button", "class": "sb-open", "aria-label": t.kanban_open + " " + deal.title },
      t.kanban_open);
    open.addEventListener("click", function () { openEditor(deal.id, "general"); });
    item.appendChild(open);
    item.addEventListener("dragstart", function (event) {
      state.dragging = true;
      event.dataTransfer.setData("text/plain", deal.id);
      event.dataTransfer.effectAllowed = "move";
    });
    item.addEventListener("dragend", function () { state.dragging = false; });
    return item;
  }

  function column(stage, deals) {
    var section = el("section", { "class": "sb-column", "data-stage": stage.id, "aria-label": stage.name });
    if (stage.color) { section.style.setProperty("--stage-color", stage.color); }
    var header = el("header", {}, stage.name + " ");
    header.appendChild(el("span", { "class": "sb-count" }, "(" + deals.length + ")"));
    section.appendChild(header);
    var list = el("ul", {});
    deals.forEach(function (deal) { list.appendChild(card(deal, state.board.stages)); });
    if (!deals.length) { list.appendChild(el("li", { "class": "sb-muted sb-empty" }, t.kanban_empty)); }
    section.appendChild(list);
    section.addEventListener("dragover", function (event) { event.preventDefault(); section.classList.add("sb-drop"); });
    section.addEventListener("dragleave", function () { section.classList.remove("sb-drop"); });
    section.addEventListener("drop", function (event) {
      event.preventDefault();
      section.classList.remove("sb-drop");
      state.dragging = false;
      var dealId = event.dataTransfer.getData("text/plain");
      var deal = state.board.deals.find(function (d) { return d.id === dealId; });
      if (deal && deal.stage_id !== stage.id) { move(dealId, stage.id); }
    });
    return section;
  }

  function renderBoard(board) {
    var key = JSON.stringify([board.pipeline, board.stages, board.deals.map(function (d) {
      return [d.id, d.title, d.amount, d.stage_id, d.responsible_id];
    })]);
    if (key === state.boardKey || state.dragging) { return; }
    state.boardKey = key;
    var focused = document.activeElement && document.activeElement.closest(".sb-card");
    var focusedDeal = focused ? focused.getAttribute("data-deal-id") : null;
    var focusedClass = focused ? document.activeElement.className : null;
    boardEl.innerHTML = "";
    board.stages.forEach(function (stage) {
      var deals = board.deals.filter(function (d) { return d.stage_id === stage.id; });
      boardEl.appendChild(column(stage, deals));
    });
    var previous = state.stages;
    state.stages = {};
    board.deals.forEach(function (deal) {
      state.stages[deal.id] = deal.stage_id;
      if (previous[deal.id] && previous[deal.id] !== deal.stage_id) {
        var moved = boardEl.querySelector('.sb-card[data-deal-id="' + deal.id + '"]');
        if (moved) { moved.classList.add("sb-moved"); }
      }
    });
    if (focusedDeal && focusedClass) {
      var again = boardEl.querySelector('.sb-card[data-deal-id="' + focusedDeal + '"] .' + focusedClass.split(" ")[0]);
      if (again) { again.focus(); }
    }
  }

  function renderNotices(board) {
    var key = state.user + JSON.stringify(board.notifications.map(function (n) { return n.id; }));
    if (key === state.noticesKey) { return; }
    state.noticesKey = key;
    var seen = state.seenNotices;
    state.seenNotices = {};
    noticesEl.innerHTML = "";
    if (!board.notifications.length) {
      noticesEl.appendChild(el("li", { "class": "sb-muted" }, t.kanban_no_notifications));
    }
    board.notifications.forEach(function (note) {
      state.seenNotices[note.id] = true;
      var item = el("li", { "class": "sb-notice", "data-notice-id": String(note.id) });
      if (seen && !seen[note.id]) { item.classList.add("sb-new"); }
      var when = new Date(note.created * 1000).toLocaleTimeString(config.lang === "en" ? "en-GB" : "ru-RU");
      item.appendChild(el("div", { "class": "sb-muted" }, when + " · " + note.user));
      item.appendChild(el("div", { "class": "sb-message" }, note.message));
      if (note.deal_id) {
        var open = el("button", { type: "button" }, t.kanban_open);
        open.addEventListener("click", function () { openEditor(note.deal_id, "notice"); });
        item.appendChild(open);
      }
      noticesEl.appendChild(item);
    });
  }

  function renderTasks(board) {
    var key = state.user + JSON.stringify(board.tasks);
    if (key === state.tasksKey) { return; }
    var seen = state.tasksKey && state.tasksKey.indexOf(state.user) === 0 ? state.seenTasks : null;
    state.tasksKey = key;
    state.seenTasks = {};
    tasksEl.innerHTML = "";
    if (!board.tasks.length) { tasksEl.appendChild(el("li", { "class": "sb-muted" }, t.kanban_no_tasks)); }
    board.tasks.forEach(function (task) {
      state.seenTasks[task.id] = true;
      var item = el("li", { "class": "sb-notice sb-task", "data-task-id": task.id });
      if (seen && !seen[task.id]) { item.classList.add("sb-new"); }
      var meta = task.user;
      if (task.deadline) {
        meta += " · " + t.kanban_deadline + ": " + new Date(task.deadline * 1000).toLocaleString(
          config.lang === "en" ? "en-GB" : "ru-RU", { dateStyle: "short", timeStyle: "short" });
      }
      item.appendChild(el("div", { "class": "sb-muted" }, meta));
      item.appendChild(el("div", { "class": "sb-message" }, task.title));
      if (task.deal_id) {
        var open = el("button", { type: "button" }, t.kanban_open);
        open.addEventListener("click", function () { openEditor(task.deal_id, "notice"); });
        item.appendChild(open);
      }
      tasksEl.appendChild(item);
    });
  }

  function renderControls(board) {
    var users = board.users.map(function (u) { return { value: u.id, label: u.name + " — " + u.position }; });
    users.push({ value: "automation", label: userSelect.getAttribute("data-automation-label") });
    fillSelect(userSelect, users, state.user);
    fillSelect(pipelineSelect, board.pipelines.map(function (p) { return { value: p.id, label: p.name }; }),
      state.pipeline);
    var installed = board.portal.installed && board.fields.length > 0;
    showStatus(board.portal.name + " · " + (installed ? t.kanban_app_installed : t.kanban_app_not_installed),
      installed);
  }

  function refresh() {
    return fetch(config.board + "?" + params(), { cache: "no-store" })
      .then(function (response) {
        return response.json().then(function (data) {
          if (response.status === 400 && (state.user !== "2" || state.pipeline !== "0")) {
            // A remembered person or pipeline this portal does not have: start over with the defaults.
            state.user = "2";
            state.pipeline = "0";
            window.localStorage.removeItem("sb-user");
            window.localStorage.removeItem("sb-pipeline");
          }
          if (!response.ok) { throw new Error(data.message || response.statusText); }
          return data;
        });
      })
      .then(function (board) {
        state.board = board;
        renderControls(board);
        renderBoard(board);
        renderNotices(board);
        renderTasks(board);
        if (state.openDeal) {
          // /crm/deal/details/<id>/ lands here with ?deal=<id>: that deal's card, as the portal shows it.
          var dealId = state.openDeal;
          state.openDeal = "";
          openEditor(dealId, "general");
        }
        boardEl.setAttribute("data-ready", "yes");
      })
      .catch(function (error) { showStatus(t.kanban_failed + " " + error.message, false); });
  }

  function fieldInput(field, value) {
    var id = "sb-field-" + field.name;
    var wrap = el("div", { "class": "sb-field" });
    wrap.appendChild(el("label", { "for": id }, field.label));
    var input;
    if (field.type === "enumeration") {
      input = el("select", { id: id, name: field.name });
      input.appendChild(el("option", { value: "" }, t.kanban_not_set));
      field.items.forEach(function (item) {
        var option = el("option", { value: item.id }, item.value);
        if (item.id === value) { option.selected = true; }
        input.appendChild(option);
      });
    } else if (field.type === "string") {
      input = el("textarea", { id: id, name: field.name, rows: "3" });
      input.value = value || "";
    } else {
      input = el("input", { id: id, name: field.name, type: field.type === "double" ? "number" : "text", step: "any" });
      input.value = value || "";
    }
    wrap.appendChild(input);
    return wrap;
  }

  // ---- app frames: opened like Bitrix24 opens them (a signed form POSTed into the iframe), and the parent's
  // side of the BX24 frame protocol: "<command>:<params>:<callback>:<APP_SID>" in, "<callback>:<JSON>" out.
  var frames = {};

  function openFrame(box, placement, extra) {
    Object.keys(frames).forEach(function (sid) { if (frames[sid].box === box) { delete frames[sid]; } });
    box.innerHTML = "";
    if (state.user === "automation") {
      box.appendChild(el("p", { "class": "sb-muted" }, t.kanban_robot_cannot_open));
      return Promise.resolve();
    }
    return post(config.frame, Object.assign({ user: state.user, placement: placement }, extra || {}))
      .then(function (answer) {
        var sid = "sb" + Math.random().toString(16).slice(2, 14);
        var name = "sb-frame-" + sid;
        var iframe = el("iframe", { name: name, "data-placement": placement, title: placement });
        box.appendChild(iframe);
        var url = new URL(answer.url);
        url.searchParams.set("DOMAIN", window.location.host);
        url.searchParams.set("PROTOCOL", window.location.protocol === "https:" ? "1" : "0");
        url.searchParams.set("LANG", config.lang);  // the person's interface language, as in Bitrix24
        url.searchParams.set("APP_SID", sid);
        var form = el("form", { method: "post", action: url.toString(), target: name, hidden: "" });
        Object.keys(answer.fields).forEach(function (key) {
          var input = el("input", { type: "hidden", name: key });
          input.value = answer.fields[key];
          form.appendChild(input);
        });
        document.body.appendChild(form);
        frames[sid] = { iframe: iframe, box: box, answer: answer, placement: placement };
        form.submit();
        form.remove();
      })
      .catch(function (error) { box.appendChild(el("p", { "class": "sb-muted" }, t.kanban_failed + " " + error.message)); });
  }

  function initData(frame) {
    var fields = frame.answer.fields;
    return {
      LANG: config.lang, DOMAIN: window.location.host, PROTOCOL: window.location.protocol === "https:" ? 1 : 0,
      PATH: "/rest", AUTH_ID: fields.AUTH_ID, AUTH_EXPIRES: fields.AUTH_EXPIRES, REFRESH_ID: fields.REFRESH_ID,
      MEMBER_ID: fields.member_id, IS_ADMIN: frame.answer.is_admin, INSTALL: false, FIRST_RUN: false,
      PLACEMENT: frame.placement, PLACEMENT_OPTIONS: fields.PLACEMENT_OPTIONS ? JSON.parse(fields.PLACEMENT_OPTIONS) : {}
    };
  }

  window.addEventListener("message", function (event) {
    if (typeof event.data !== "string") { return; }
    var parts = event.data.split(":");
    if (parts.length < 3) { return; }
    var frame = frames[parts[parts.length - 1]];
    if (!frame || event.source !== frame.iframe.contentWindow) { return; }
    var command = parts[0];
    var callback = parts[parts.length - 2];
    var raw = parts.slice(1, -2).join(":");
    var params = raw ? JSON.parse(raw) : {};
    var source = event.source;
    var origin = event.origin;
    function reply(answer) { source.postMessage(callback + ":" + JSON.stringify(answer === undefined ? {} : answer), origin); }
    if (command === "getInitData") {
      reply(initData(frame));
    } else if (command === "resizeWindow") {
      var height = parseInt(params.height, 10);
      if (height > 0) {
        frame.iframe.style.height = height + "px";
        frame.iframe.setAttribute("data-height", String(height));
      }
      reply({ width: params.width, height: height });
    } else if (command === "openPath") {
      var match = /\/crm\/deal\/details\/(\d+)\//.exec(params.path || "");
      if (match) {
        openEditor(match[1], null, function () { reply({ result: "close" }); });
      } else {
        reply({ result: "error", errorCode: "PATH_NOT_SUPPORTED" });
      }
    } else if (command === "openApplication") {
      openApp(params);
      reply({});
    } else if (command === "closeApplication") {
      appSlider.close();
      reply({});
    } else if (command === "reloadWindow") {
      openFrame(frame.box, frame.placement, frame.placement === "DEFAULT" ? {} : { deal_id: state.editing });
    } else {
      reply({});
    }
  });

  var appSlider = document.getElementById("sb-app");

  function openApp(options) {
    if (!appSlider.open) { appSlider.showModal(); }
    openFrame(document.getElementById("sb-app-frame"), "DEFAULT", { options: options || {} });
  }
  appSlider.addEventListener("close", function () { openFrameCleanup(document.getElementById("sb-app-frame")); });
  document.getElementById("sb-app-close").addEventListener("click", function () { appSlider.close(); });
  document.getElementById("sb-open-app").addEventListener("click", function () { openApp({}); });

  function openFrameCleanup(box) {
    Object.keys(frames).forEach(function (sid) { if (frames[sid].box === box) { delete frames[sid]; } });
    box.innerHTML = "";
  }

  // ---- the deal card: a slider with the deal's fields and the tabs apps placed in it
  var onEditorClose = null;

  function selectDealTab(tab, deal) {
    document.querySelectorAll("#sb-deal-tabs [role=tab]").forEach(function (button) {
      button.setAttribute("aria-selected", button.getAttribute("data-tab") === tab ? "true" : "false");
    });
    var general = tab === "general";
    document.getElementById("sb-editor-form").hidden = !general;
    document.getElementById("sb-robot-form").hidden = !general || !state.board.robots.length;
    var box = document.getElementById("sb-deal-frame");
    box.hidden = general;
    if (general) { openFrameCleanup(box); } else { openFrame(box, "CRM_DEAL_DETAIL_TAB", { deal_id: deal.id }); }
  }

  function showDeal(deal, tab) {
    state.editing = deal.id;
    state.editingDeal = deal;
    document.getElementById("sb-editor-title").textContent = t.kanban_editor_title + " #" + deal.id + ": " + deal.title;
    document.getElementById("sb-editor-meta").textContent = t.kanban_stage + ": " + deal.stage + " · " +
      t.kanban_amount + ": " + money(deal.amount, deal.currency) + " · " +
      t.kanban_responsible + ": " + deal.responsible;
    var result = document.getElementById("sb-editor-result");
    result.textContent = "";
    result.removeAttribute("data-outcome");
    var fields = document.getElementById("sb-editor-fields");
    fields.innerHTML = "";
    if (!state.board.fields.length) { fields.appendChild(el("p", {}, t.kanban_no_fields)); }
    state.board.fields.forEach(function (field) { fields.appendChild(fieldInput(field, deal.fields[field.name])); });
    document.getElementById("sb-editor-save").disabled = !state.board.fields.length;
    var robots = document.getElementById("sb-robot");
    robots.innerHTML = "";
    state.board.robots.forEach(function (robot) { robots.appendChild(el("option", { value: robot.code }, robot.name)); });
    document.getElementById("sb-robot-result").textContent = "";
    var tabs = document.getElementById("sb-deal-tabs");
    tabs.innerHTML = "";
    var list = [{ id: "general", title: t.kanban_tab_general }].concat(state.board.deal_tabs.map(function (item) {
      return { id: "app", title: item.title };
    }));
    list.forEach(function (item) {
      var button = el("button", { type: "button", role: "tab", "data-tab": item.id }, item.title);
      button.addEventListener("click", function () { selectDealTab(item.id, deal); });
      tabs.appendChild(button);
    });
    if (!editor.open) { editor.showModal(); }
    // From a notice: the responsible manager lands on the fields he must fill, anyone else on the app's tab.
    if (tab === "notice") { tab = deal.responsible_id === state.user ? "general" : "app"; }
    selectDealTab(tab !== "general" && state.board.deal_tabs.length ? "app" : "general", deal);
  }

  function openEditor(dealId, tab, onClose) {
    if (!state.board) { return; }
    onEditorClose = onClose || null;
    var query = new URLSearchParams({ deal_id: String(dealId), lang: config.lang });
    if (state.portal) { query.set("portal", state.portal); }
    fetch(config.dealCard + "?" + query.toString(), { cache: "no-store" })
      .then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) { throw new Error(data.message || response.statusText); }
          return data.deal;
        });
      })
      .then(function (deal) { showDeal(deal, tab); })
      .catch(function (error) { showStatus(t.kanban_failed + " " + error.message, false); });
  }

  editor.addEventListener("close", function () {
    openFrameCleanup(document.getElementById("sb-deal-frame"));
    var callback = onEditorClose;
    onEditorClose = null;
    if (callback) { callback(); }
  });

  document.getElementById("sb-editor-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var values = {};
    state.board.fields.forEach(function (field) {
      var input = document.getElementById("sb-field-" + field.name);
      if (input) { values[field.name] = input.value; }
    });
    var result = document.getElementById("sb-editor-result");
    post(config.deal, { user: state.user, deal_id: state.editing, fields: values })
      .then(function () {
        result.textContent = t.kanban_saved;
        result.setAttribute("data-outcome", "saved");
        return refresh();
      })
      .catch(function (error) {
        result.textContent = t.kanban_failed + " " + error.message;
        result.setAttribute("data-outcome", "failed");
      });
  });
  function robotAnswer(token, result, tries) {
    var query = new URLSearchParams({ token: token, lang: config.lang });
    if (state.portal) { query.set("portal", state.portal); }
    fetch(config.robot + "?" + query.toString(), { cache: "no-store" })
      .then(function (response) { return response.json(); })
      .then(function (answer) {
        if (!answer.done) {
          if (tries > 0) { window.setTimeout(function () { robotAnswer(token, result, tries - 1); }, 1000); }
          return;
        }
        var parts = answer.values.map(function (item) { return item.name + ": " + item.value; });
        result.textContent = parts.length ? t.kanban_robot_done + " " + parts.join("; ") : t.kanban_robot_done_empty;
        result.setAttribute("data-outcome", "done");
        refresh();
      });
  }

  document.getElementById("sb-robot-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var result = document.getElementById("sb-robot-result");
    result.textContent = t.kanban_robot_running;
    result.removeAttribute("data-outcome");
    post(config.robot, { deal_id: state.editing, code: document.getElementById("sb-robot").value })
      .then(function (answer) { robotAnswer(answer.token, result, 60); })
      .catch(function (error) { result.textContent = t.kanban_failed + " " + error.message; });
  });

  document.getElementById("sb-editor-close").addEventListener("click", function () { editor.close(); });

  userSelect.addEventListener("change", function () {
    state.user = userSelect.value;
    window.localStorage.setItem("sb-user", state.user);
    state.seenNotices = null;
    refresh();
  });
  pipelineSelect.addEventListener("change", function () {
    state.pipeline = pipelineSelect.value;
    window.localStorage.setItem("sb-pipeline", state.pipeline);
    refresh();
  });

  document.getElementById("sb-new-deal").addEventListener("click", function () {
    post(config.newDeal, { user: state.user, pipeline: state.pipeline })
      .catch(function (error) { showStatus(t.kanban_failed + " " + error.message, false); })
      .then(refresh);
  });

  refresh();
  window.setInterval(refresh, 1000);
})();
