/* Playground: streams chat completions from the public API with the user's short-lived playground key,
   one model or two or three side by side (each its own conversation), with Stop, Retry and Markdown. */
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
  });
  selects.forEach(function (select) { select.addEventListener("change", layout); });

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
      return { answer: answer, stopped: stopped, error: meta.error };
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
    var item = bubble(thread, "assistant", "");
    item.classList.add("pg-pending");
    var messages = (system ? [{ role: "system", content: system }] : []).concat(thread.history);
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
        thread.history.push({ role: "assistant", content: result.answer });
        if (result.error) showError(result.error);
      });
    }).catch(function (err) {
      if (err && err.name === "AbortError") {  // stopped before the answer began
        item.classList.add("pg-stopped");
        item.querySelector(".pg-text").textContent = "Stopped before the answer began.";
        thread.history.pop();
        return;
      }
      if (single) {
        item.remove();
        thread.history.pop();
        failed = content;
        var users = thread.log.querySelectorAll(".pg-user");
        if (users.length) users[users.length - 1].classList.add("pg-failed");
        showError(err.message, status);
        return;
      }
      // Side by side: the column says what went wrong; the other models' answers stand.
      thread.history.pop();
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
    });
  }

  function clear() {
    threads.forEach(function (t) {
      t.history = [];
      t.log.textContent = "";
    });
    failed = null;
    showError("");
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
  stop.addEventListener("click", function () { if (running) running.abort(); });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  root.querySelector("[data-pg-clear]").addEventListener("click", clear);
})();
