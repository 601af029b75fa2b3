/* Playground: streams chat completions from the public API with the user's short-lived playground key,
   one model or two or three side by side (each its own conversation), with Stop, Retry and Markdown.
   Conversations are kept in this browser (localStorage, one entry per organisation and user): the
   messages, the models and the settings, never the key. */
(function () {
  "use strict";
  var root = document.querySelector("[data-playground]");
  if (!root) return;
  var columns = root.querySelector("[data-pg-columns]");
  var firstColumn = root.querySelector("[data-pg-column]");
  var form = root.querySelector("[data-pg-form]");
  var prompt = document.getElementById("pg-prompt");
  var send = root.querySelector("[data-pg-send]");
  var stop = root.querySelector("[data-pg-stop]");
  var errorBox = root.querySelector("[data-pg-error]");
  var temperature = document.getElementById("pg-temperature");
  var temperatureOut = document.getElementById("pg-temperature-out");
  var compare = root.querySelector("[data-pg-compare]");
  var compareModels = root.querySelector("[data-pg-compare-models]");
  var selects = Array.prototype.slice.call(root.querySelectorAll("select[data-pg-model]"));
  var key = null;
  var failed = null; // the user message whose answer failed (one model), until it is retried or replaced
  var running = null; // the AbortController of the answers streaming now
  // Phones: the settings start folded under the chat so the message box is on screen.
  var settings = root.querySelector("[data-pg-settings]");
  if (settings && window.matchMedia("(max-width: 900px)").matches) settings.open = false;

  // One thread per model shown: its column, its log and its own history.
  var threads = [makeThread(firstColumn, selects[0])];
  var emptyState = firstColumn.querySelector("[data-pg-empty]").cloneNode(true);

  function makeThread(column, select) {
    return { column: column, log: column.querySelector(".pg-log"), head: column.querySelector("[data-pg-col-head]"), select: select, history: [] };
  }

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  temperature.addEventListener("input", function () { temperatureOut.textContent = Number(temperature.value).toFixed(1); });

  // --- the model picker: a search box that narrows every model list, and the chosen model's prices ---
  var search = root.querySelector("[data-pg-search]");
  var count = root.querySelector("[data-pg-count]");
  var price = root.querySelector("[data-pg-price]");
  function showPrice() {
    var option = selects[0].selectedOptions[0];
    price.textContent = option ? "Price: " + option.getAttribute("data-price") : "";
  }
  search.addEventListener("input", function () {
    var words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0;
    selects.forEach(function (select, i) {
      var firstMatch = null;
      Array.prototype.forEach.call(select.options, function (option) {
        if (!option.value) return; // "None"
        var hay = option.getAttribute("data-search") || "";
        var match = words.every(function (w) { return hay.indexOf(w) !== -1; });
        option.hidden = !match;
        if (match && !firstMatch) firstMatch = option;
        if (match && i === 0) shown += 1;
      });
      // The main list follows the search: its first match is chosen when the chosen one is filtered out.
      if (i === 0 && firstMatch && select.selectedOptions[0] && select.selectedOptions[0].hidden) {
        select.value = firstMatch.value;
      }
    });
    count.textContent = shown + " model" + (shown === 1 ? "" : "s") + (words.length ? " match." : " available.");
    showPrice();
  });
  selects[0].addEventListener("change", showPrice);
  showPrice();

  // --- compare: two or three columns ---
  function modelName(select) {
    var option = select.selectedOptions[0];
    return option ? option.textContent.split(" · ")[0] : "";
  }
  function layout() {
    var on = compare.checked;
    compareModels.hidden = !on;
    var wanted = on ? selects.filter(function (s, i) { return i === 0 || s.value; }) : [selects[0]];
    // Changing the set of models starts new conversations (each column's history is its model's).
    var same = wanted.length === threads.length && wanted.every(function (s, i) { return threads[i].select === s; });
    if (!same) {
      threads.slice(1).forEach(function (t) { t.column.remove(); });
      threads = [threads[0]];
      if (!restoring && hasMessages()) startConversation();
      clear();
      wanted.slice(1).forEach(function (select) {
        var column = firstColumn.cloneNode(true);
        column.querySelector(".pg-log").removeAttribute("id");
        columns.appendChild(column);
        threads.push(makeThread(column, select));
      });
    }
    columns.classList.toggle("pg-compare-on", threads.length > 1);
    threads.forEach(function (t) {
      t.head.hidden = threads.length === 1;
      t.head.textContent = modelName(t.select);
      t.log.setAttribute("aria-label", threads.length === 1 ? "Chat" : "Chat with " + modelName(t.select));
    });
  }
  compare.addEventListener("change", function () {
    if (compare.checked && !selects[1].value) selects[1].selectedIndex = Math.min(1, selects[1].options.length - 1);
    layout();
    save();
  });
  selects.forEach(function (select) {
    select.addEventListener("change", function () { layout(); save(); rememberModelInUrl(); });
  });

  function getKey(force) {
    if (key && !force) return Promise.resolve(key);
    return fetch(root.getAttribute("data-key-url"), {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken() },
    }).then(function (r) {
      if (!r.ok) throw new Error("Could not get a playground key (HTTP " + r.status + ").");
      return r.json();
    }).then(function (body) { key = body.key; return key; });
  }

  function bubble(thread, role, text) {
    var empty = thread.log.querySelector("[data-pg-empty]");
    if (empty) empty.remove();
    var item = document.createElement("div");
    item.className = "pg-msg pg-" + role;
    var who = document.createElement("div");
    who.className = "pg-who";
    who.textContent = role === "user" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "pg-text" + (role === "assistant" ? " md" : "");
    body.textContent = text || "";
    item.appendChild(who);
    item.appendChild(body);
    thread.log.appendChild(item);
    thread.log.scrollTop = thread.log.scrollHeight;
    return item;
  }

  function renderAnswer(element, text) {
    if (window.SyMarkdown) window.SyMarkdown.render(element, text);
    else element.textContent = text;
  }

  // An error under the chat: the message, a link to Credits when the answer was a 402, and a Retry
  // button that sends the failed message again (its bubble stays; it is not sent twice).
  function showError(message, status) {
    errorBox.textContent = "";
    errorBox.hidden = !message;
    if (!message) return;
    errorBox.appendChild(document.createTextNode(message + " "));
    if (status === 402) {
      var link = document.createElement("a");
      link.href = root.getAttribute("data-credits-url");
      link.textContent = "Add credits on the Credits page";
      errorBox.appendChild(link);
      errorBox.appendChild(document.createTextNode(" "));
    }
    if (failed !== null) {
      var retry = document.createElement("button");
      retry.type = "button";
      retry.className = "btn btn-sm";
      retry.textContent = "Retry";
      retry.addEventListener("click", function () { runAll(failed); });
      errorBox.appendChild(retry);
    }
  }

  function formatCost(cost) {
    if (cost === undefined || cost === null) return "—";
    // The API sends cost as an exact decimal number; keep its digits as written.
    return "$" + String(cost);
  }

  // Max tokens: empty means no limit (said so beside the field); anything else must be a whole number
  // of at least 1. Returns the number, null for no limit, or false (and says why) when it is invalid.
  function readMaxTokens() {
    var field = document.getElementById("pg-max-tokens");
    var raw = field.value.trim();
    if (!raw && field.validity.valid) return null;
    var n = Number(raw);
    if (!field.validity.valid || !Number.isInteger(n) || n < 1) {
      showError("Max tokens must be a whole number of at least 1, or empty for no limit.");
      field.setAttribute("aria-invalid", "true");
      field.focus();
      return false;
    }
    field.removeAttribute("aria-invalid");
    return n;
  }

  function request(model, messages, retried, maxTokens, signal) {
    return getKey(retried).then(function (secret) {
      var body = {
        model: model,
        messages: messages,
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number(temperature.value),
      };
      if (maxTokens) body.max_tokens = maxTokens;
      return fetch(root.getAttribute("data-api"), {
        method: "POST",
        headers: { "Authorization": "Bearer " + secret, "Content-Type": "application/json" },
        body: JSON.stringify(body),
        signal: signal,
      }).then(function (response) {
        if (response.status === 401 && !retried) return request(model, messages, true, maxTokens, signal);
        return response;
      });
    });
  }

  // Reads the stream into the bubble; resolves with {answer, stopped}. Stop keeps what arrived so far.
  function readStream(response, item, thread, began) {
    var text = item.querySelector(".pg-text");
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var answer = "";
    var firstToken = null;
    var meta = { provider: "", model: "", usage: null, error: null };
    var scheduled = false;

    function paint() {
      scheduled = false;
      renderAnswer(text, answer);
      thread.log.scrollTop = thread.log.scrollHeight;
    }

    function handle(line) {
      if (!line.startsWith("data:")) return;
      var payload = line.slice(5).trim();
      if (!payload || payload === "[DONE]") return;
      var chunk;
      try { chunk = JSON.parse(payload); } catch (e) { return; }
      if (chunk.provider) meta.provider = chunk.provider;
      if (chunk.model) meta.model = chunk.model;
      if (chunk.error) meta.error = chunk.error.message || "The provider failed mid-answer.";
      (chunk.choices || []).forEach(function (c) {
        if (c.delta && c.delta.content) {
          if (firstToken === null) firstToken = performance.now() - began;
          answer += c.delta.content;
          if (!scheduled) { scheduled = true; requestAnimationFrame(paint); }
        }
      });
      if (chunk.usage) meta.usage = chunk.usage;
    }

    function pump() {
      return reader.read().then(function (step) {
        if (step.done) return;
        buffer += decoder.decode(step.value, { stream: true });
        var lines = buffer.split("\n");
        buffer = lines.pop();
        lines.forEach(handle);
        return pump();
      });
    }

    function finish(stopped) {
      if (buffer && !stopped) handle(buffer);
      paint();
      var info = document.createElement("div");
      info.className = "pg-meta";
      info.setAttribute("data-testid", "pg-usage");
      var u = meta.usage;
      var latency = Math.round(performance.now() - began);
      var parts = [];
      if (stopped) {
        item.classList.add("pg-stopped");
        parts.push("Stopped");
      }
      if (u) {
        parts.push(u.prompt_tokens + " → " + u.completion_tokens + " tokens", formatCost(u.cost));
      }
      if (meta.provider) parts.push(meta.provider);
      parts.push(latency.toLocaleString() + " ms" + (firstToken !== null ? " (first token " + Math.round(firstToken).toLocaleString() + " ms)" : ""));
      info.textContent = parts.join(" · ");
      item.appendChild(info);
      return { answer: answer, stopped: stopped, error: meta.error, meta: info.textContent };
    }

    return pump().then(function () { return finish(false); }, function (err) {
      if (err && err.name === "AbortError") return finish(true);
      throw err;
    });
  }

  function submit() {
    var content = prompt.value.trim();
    if (!content || running || readMaxTokens() === false) return;
    if (failed !== null) {  // a new message replaces the one that failed
      threads.forEach(function (t) {
        var stale = t.log.querySelector(".pg-failed");
        if (stale) stale.remove();
      });
      failed = null;
    }
    threads.forEach(function (t) { bubble(t, "user", content); });
    prompt.value = "";
    runAll(content);
  }

  function setRunning(controller) {
    running = controller;
    send.disabled = !!controller;
    send.hidden = !!controller;
    stop.hidden = !controller;
    if (controller) stop.focus();
  }

  function runAll(content) {
    var maxTokens = readMaxTokens();
    if (maxTokens === false) return;
    showError("");
    failed = null;
    threads.forEach(function (t) {
      t.log.querySelectorAll(".pg-failed").forEach(function (el) { el.classList.remove("pg-failed"); });
    });
    var controller = new AbortController();
    setRunning(controller);
    var system = document.getElementById("pg-system").value.trim();
    var single = threads.length === 1;
    Promise.all(threads.map(function (t) { return run(t, content, system, maxTokens, controller, single); })).then(function () {
      setRunning(null);
      prompt.focus();
    });
  }

  function run(thread, content, system, maxTokens, controller, single) {
    thread.history.push({ role: "user", content: content });
    save();
    var item = bubble(thread, "assistant", "");
    item.classList.add("pg-pending");
    var history = thread.history; // a New chat while this streams gives the thread a new history
    var messages = (system ? [{ role: "system", content: system }] : []).concat(
      history.map(function (m) { return { role: m.role, content: m.content }; }));
    var status = 0;
    var began = performance.now();
    return request(thread.select.value, messages, false, maxTokens, controller.signal).then(function (response) {
      status = response.status;
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          throw new Error((body.error && body.error.message) || "Request failed (HTTP " + response.status + ").");
        });
      }
      return readStream(response, item, thread, began).then(function (result) {
        history.push({ role: "assistant", content: result.answer, meta: result.meta, stopped: result.stopped });
        if (result.error) showError(result.error);
      });
    }).catch(function (err) {
      if (err && err.name === "AbortError") {  // stopped before the answer began
        item.classList.add("pg-stopped");
        item.querySelector(".pg-text").textContent = "Stopped before the answer began.";
        history.pop();
        return;
      }
      if (single) {
        item.remove();
        history.pop();
        failed = content;
        var users = thread.log.querySelectorAll(".pg-user");
        if (users.length) users[users.length - 1].classList.add("pg-failed");
        showError(err.message, status);
        return;
      }
      // Side by side: the column says what went wrong; the other models' answers stand.
      history.pop();
      item.classList.add("pg-error-answer");
      var text = item.querySelector(".pg-text");
      text.textContent = err.message + " ";
      if (status === 402) {
        var link = document.createElement("a");
        link.href = root.getAttribute("data-credits-url");
        link.textContent = "Add credits";
        text.appendChild(link);
      }
    }).then(function () {
      item.classList.remove("pg-pending");
      if (history === thread.history) save();
    });
  }

  function clear() {
    threads.forEach(function (t) {
      t.history = [];
      t.log.textContent = "";
      t.log.appendChild(emptyState.cloneNode(true));
    });
    failed = null;
    showError("");
  }

  // --- conversations kept in this browser ----------------------------------------------------------
  // One localStorage entry per organisation and user: {current, conversations: [{id, title, updated,
  // compare, models, settings, threads: [[{role, content, meta, stopped}]]}]}, newest first. Storage
  // that is full, blocked or holds something unreadable never breaks the page: it is read defensively
  // and a write that fails drops the oldest conversations (then the oldest messages) and tries again.
  var STORE_KEY = root.getAttribute("data-store");
  var MAX_CONVERSATIONS = 10;
  var MAX_MESSAGES = 200; // per column
  var MAX_CHARS = 400000; // the whole entry, well under the browser's 5 MB for the origin
  var MAX_TITLE = 60;
  var recentToggle = root.querySelector("[data-pg-recent-toggle]");
  var recentPanel = root.querySelector("[data-pg-recent]");
  var recentList = root.querySelector("[data-pg-recent-list]");
  var recentCount = root.querySelector("[data-pg-recent-count]");
  var recentNote = root.querySelector("[data-pg-recent-note]");
  var restoring = false;
  var storageWorks = true;
  var state = { current: null, conversations: [] };
  var currentId = null;

  function storage() {
    try { return window.localStorage || null; } catch (e) { return null; }
  }

  function text(value, limit) {
    return typeof value === "string" ? value.slice(0, limit) : "";
  }

  // Whatever is stored is checked field by field; anything unexpected is dropped, not trusted.
  function cleanMessage(m) {
    if (!m || (m.role !== "user" && m.role !== "assistant") || typeof m.content !== "string") return null;
    var out = { role: m.role, content: m.content };
    if (m.role === "assistant") {
      out.meta = text(m.meta, 300);
      out.stopped = m.stopped === true;
    }
    return out;
  }
  function cleanConversation(c) {
    if (!c || typeof c !== "object" || typeof c.id !== "string" || !Array.isArray(c.threads)) return null;
    var threadsIn = c.threads.slice(0, 3).map(function (list) {
      return Array.isArray(list) ? list.map(cleanMessage).filter(Boolean).slice(-MAX_MESSAGES) : [];
    });
    if (!threadsIn.length) threadsIn = [[]];
    var settingsIn = c.settings && typeof c.settings === "object" ? c.settings : {};
    return {
      id: c.id.slice(0, 40),
      title: text(c.title, MAX_TITLE),
      updated: typeof c.updated === "number" ? c.updated : 0,
      compare: c.compare === true && threadsIn.length > 1,
      models: Array.isArray(c.models) ? c.models.slice(0, 3).map(function (m) { return text(m, 200); }) : [],
      settings: {
        temperature: typeof settingsIn.temperature === "string" ? settingsIn.temperature.slice(0, 8) : null,
        maxTokens: typeof settingsIn.maxTokens === "string" ? settingsIn.maxTokens.slice(0, 12) : null,
        system: typeof settingsIn.system === "string" ? settingsIn.system.slice(0, 20000) : null,
      },
      threads: threadsIn,
    };
  }
  function load() {
    var store = storage();
    if (!store) { storageWorks = false; return; }
    var raw = null;
    try { raw = store.getItem(STORE_KEY); } catch (e) { storageWorks = false; return; }
    if (!raw) return;
    var parsed = null;
    try { parsed = JSON.parse(raw); } catch (e) { parsed = null; }
    if (!parsed || typeof parsed !== "object" || !Array.isArray(parsed.conversations)) return;
    state.conversations = parsed.conversations.map(cleanConversation).filter(Boolean).slice(0, MAX_CONVERSATIONS + 1);
    state.current = typeof parsed.current === "string" ? parsed.current : null;
  }

  function hasMessages() {
    return threads.some(function (t) { return t.history.length > 0; });
  }
  function newId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }
  function snapshot() {
    var first = null;
    threads.forEach(function (t) {
      t.history.forEach(function (m) { if (!first && m.role === "user") first = m.content; });
    });
    var title = (first || "").replace(/\s+/g, " ").trim();
    if (title.length > MAX_TITLE) title = title.slice(0, MAX_TITLE - 1) + "…";
    return {
      id: currentId,
      title: title,
      updated: Date.now(),
      compare: threads.length > 1,
      models: selects.map(function (s) { return s.value; }),
      settings: {
        temperature: temperature.value,
        maxTokens: document.getElementById("pg-max-tokens").value,
        system: document.getElementById("pg-system").value,
      },
      threads: threads.map(function (t) {
        return t.history.slice(-MAX_MESSAGES).map(function (m) { return cleanMessage(m); }).filter(Boolean);
      }),
    };
  }
  function isEmpty(c) {
    return !c.threads.some(function (list) { return list.length > 0; });
  }

  // Writes the state; on a full (or failing) storage drops the oldest conversations, then the oldest
  // messages of the one left, until it fits. Gives up quietly (the page works; nothing is kept).
  function write() {
    var store = storage();
    if (!store) { storageWorks = false; return; }
    for (var attempt = 0; attempt < 60; attempt++) {
      var raw = JSON.stringify(state);
      if (raw.length <= MAX_CHARS) {
        try { store.setItem(STORE_KEY, raw); storageWorks = true; return; } catch (e) { storageWorks = false; }
      }
      if (state.conversations.length > 1) { state.conversations.pop(); continue; }
      var only = state.conversations[0];
      var longest = only && only.threads.reduce(function (a, b) { return b.length > a.length ? b : a; }, []);
      if (!longest || !longest.length) break;
      only.threads.forEach(function (list) { list.splice(0, Math.max(1, Math.ceil(list.length / 4))); });
    }
    try { store.removeItem(STORE_KEY); } catch (e) { /* blocked storage: nothing to keep */ }
  }

  function save() {
    if (restoring) return;
    if (!currentId) currentId = newId();
    var mine = snapshot();
    var others = state.conversations.filter(function (c) { return c.id !== currentId && !isEmpty(c); });
    state.conversations = [mine].concat(others).slice(0, MAX_CONVERSATIONS);
    state.current = currentId;
    write();
    renderRecent();
  }

  function startConversation() {
    currentId = newId();
  }

  function renderRecent() {
    var list = state.conversations.filter(function (c) { return !isEmpty(c); });
    recentList.textContent = "";
    recentCount.textContent = String(list.length);
    list.forEach(function (c) {
      var li = document.createElement("li");
      li.className = "pg-recent-item";
      var open = document.createElement("button");
      open.type = "button";
      open.className = "pg-recent-open";
      open.setAttribute("data-pg-open", c.id);
      if (c.id === currentId) open.setAttribute("aria-current", "true");
      var title = document.createElement("span");
      title.className = "pg-recent-title";
      title.textContent = c.title || "Untitled";
      var when = document.createElement("span");
      when.className = "pg-recent-when muted small";
      when.textContent = (c.compare ? c.threads.length + " models · " : "") + new Date(c.updated).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
      open.appendChild(title);
      open.appendChild(when);
      open.addEventListener("click", function () { switchTo(c.id); });
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "btn btn-ghost btn-sm pg-recent-remove";
      remove.setAttribute("aria-label", "Remove conversation: " + (c.title || "Untitled"));
      remove.textContent = "Remove";
      remove.addEventListener("click", function () { removeConversation(c.id); });
      li.appendChild(open);
      li.appendChild(remove);
      recentList.appendChild(li);
    });
    if (!storageWorks) recentNote.textContent = "This browser does not let the playground keep conversations.";
  }

  function setOption(select, value) {
    if (typeof value !== "string") return;
    var found = Array.prototype.some.call(select.options, function (o) { return o.value === value; });
    if (found) select.value = value;
  }

  // Shows a stored conversation: its models and settings first (so the columns are laid out), then
  // its messages, answers through the same sanitising Markdown renderer as live ones.
  function show(c) {
    restoring = true;
    try {
      currentId = c.id;
      c.models.forEach(function (m, i) { if (selects[i]) setOption(selects[i], m); });
      if (selects[2] && c.compare && c.threads.length < 3) selects[2].value = "";
      compare.checked = c.compare;
      if (c.settings.temperature !== null && !isNaN(Number(c.settings.temperature))) temperature.value = c.settings.temperature;
      temperatureOut.textContent = Number(temperature.value).toFixed(1);
      if (c.settings.maxTokens !== null) document.getElementById("pg-max-tokens").value = c.settings.maxTokens;
      if (c.settings.system !== null) document.getElementById("pg-system").value = c.settings.system;
      layout();
      clear();
      threads.forEach(function (t, i) {
        (c.threads[i] || []).forEach(function (m) {
          t.history.push(m);
          var item = bubble(t, m.role, m.role === "user" ? m.content : "");
          if (m.role === "assistant") {
            renderAnswer(item.querySelector(".pg-text"), m.content);
            if (m.stopped) item.classList.add("pg-stopped");
            if (m.meta) {
              var info = document.createElement("div");
              info.className = "pg-meta";
              info.setAttribute("data-testid", "pg-usage");
              info.textContent = m.meta;
              item.appendChild(info);
            }
          }
        });
      });
      showPrice();
    } finally {
      restoring = false;
    }
  }

  function switchTo(id) {
    if (running) running.abort();
    var c = state.conversations.filter(function (x) { return x.id === id; })[0];
    if (!c) return;
    if (hasMessages()) save();
    show(c);
    state.current = c.id;
    write();
    renderRecent();
    prompt.focus();
  }

  function newChat() {
    if (running) running.abort();
    if (hasMessages()) save();
    startConversation();
    clear();
    save();
    prompt.focus();
  }

  function removeConversation(id) {
    state.conversations = state.conversations.filter(function (c) { return c.id !== id; });
    if (id === currentId) {
      if (running) running.abort();
      startConversation();
      clear();
      save();
    } else {
      write();
      renderRecent();
    }
    recentToggle.focus();
  }

  // A model picked here (not in the link that opened the page) is written into the address, so a
  // reload restores this conversation rather than starting one with the linked model.
  function rememberModelInUrl() {
    try {
      var url = new URL(window.location.href);
      if (!url.searchParams.has("model")) return;
      url.searchParams.set("model", selects[0].value);
      window.history.replaceState(window.history.state, "", url.toString());
    } catch (e) { /* an old browser: the address stays */ }
  }

  recentToggle.addEventListener("click", function () {
    var open = recentPanel.hidden;
    recentPanel.hidden = !open;
    recentToggle.setAttribute("aria-expanded", open ? "true" : "false");
  });
  root.querySelector("[data-pg-new]").addEventListener("click", newChat);
  [temperature, document.getElementById("pg-max-tokens"), document.getElementById("pg-system")].forEach(function (field) {
    field.addEventListener("change", save);
  });

  load();
  var linked = new URLSearchParams(window.location.search).get("model");
  var stored = state.conversations.filter(function (c) { return c.id === state.current; })[0];
  // A link to the playground with another model than the stored conversation's starts a new chat
  // with it; the stored one stays in the recent list.
  if (stored && (!linked || stored.models[0] === linked || isEmpty(stored))) {
    if (linked && isEmpty(stored)) stored.models[0] = linked;
    show(stored);
  } else {
    startConversation();
  }
  renderRecent();

  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
  stop.addEventListener("click", function () { if (running) running.abort(); });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
})();
