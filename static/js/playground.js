/* Playground: streams chat completions from the public API with the user's short-lived playground key. */
(function () {
  "use strict";
  var root = document.querySelector("[data-playground]");
  if (!root) return;
  var log = document.getElementById("pg-log");
  var form = root.querySelector("[data-pg-form]");
  var prompt = document.getElementById("pg-prompt");
  var send = root.querySelector("[data-pg-send]");
  var errorBox = root.querySelector("[data-pg-error]");
  var temperature = document.getElementById("pg-temperature");
  var temperatureOut = document.getElementById("pg-temperature-out");
  var history = [];
  var key = null;
  var failed = null; // the user message whose answer failed, until it is retried or replaced
  // Phones: the settings start folded under the chat so the message box is on screen.
  var settings = root.querySelector("[data-pg-settings]");
  if (settings && window.matchMedia("(max-width: 900px)").matches) settings.open = false;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers"))["X-CSRFToken"]; } catch (e) { return ""; }
  }

  temperature.addEventListener("input", function () { temperatureOut.textContent = Number(temperature.value).toFixed(1); });

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

  function bubble(role, text) {
    var empty = log.querySelector("[data-pg-empty]");
    if (empty) empty.remove();
    var item = document.createElement("div");
    item.className = "pg-msg pg-" + role;
    var who = document.createElement("div");
    who.className = "pg-who";
    who.textContent = role === "user" ? "You" : "Assistant";
    var body = document.createElement("div");
    body.className = "pg-text";
    body.textContent = text || "";
    item.appendChild(who);
    item.appendChild(body);
    log.appendChild(item);
    log.scrollTop = log.scrollHeight;
    return item;
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
      retry.addEventListener("click", function () { run(failed); });
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

  function request(messages, retried, maxTokens) {
    return getKey(retried).then(function (secret) {
      var body = {
        model: document.getElementById("pg-model").value,
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
      }).then(function (response) {
        if (response.status === 401 && !retried) return request(messages, true, maxTokens);
        return response;
      });
    });
  }

  function readStream(response, item) {
    var text = item.querySelector(".pg-text");
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var answer = "";
    var meta = { provider: "", model: "", usage: null, error: null };

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
        if (c.delta && c.delta.content) { answer += c.delta.content; text.textContent = answer; }
      });
      if (chunk.usage) meta.usage = chunk.usage;
      log.scrollTop = log.scrollHeight;
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
    return pump().then(function () {
      if (buffer) handle(buffer);
      var info = document.createElement("div");
      info.className = "pg-meta";
      var u = meta.usage;
      info.textContent = u
        ? u.prompt_tokens + " → " + u.completion_tokens + " tokens · " + formatCost(u.cost) + " · " + (meta.provider || "?")
        : (meta.provider ? "via " + meta.provider : "");
      info.setAttribute("data-testid", "pg-usage");
      item.appendChild(info);
      if (meta.error) showError(meta.error);
      return answer;
    });
  }

  function submit() {
    var content = prompt.value.trim();
    if (!content || readMaxTokens() === false) return;
    if (failed !== null) {  // a new message replaces the one that failed
      var stale = log.querySelector(".pg-failed");
      if (stale) stale.remove();
      failed = null;
    }
    bubble("user", content);
    prompt.value = "";
    run(content);
  }

  function run(content) {
    var maxTokens = readMaxTokens();
    if (maxTokens === false) return;
    showError("");
    failed = null;
    log.querySelectorAll(".pg-failed").forEach(function (el) { el.classList.remove("pg-failed"); });
    var system = document.getElementById("pg-system").value.trim();
    history.push({ role: "user", content: content });
    send.disabled = true;
    var item = bubble("assistant", "");
    item.classList.add("pg-pending");
    var messages = (system ? [{ role: "system", content: system }] : []).concat(history);
    var status = 0;
    request(messages, false, maxTokens).then(function (response) {
      status = response.status;
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          throw new Error((body.error && body.error.message) || "Request failed (HTTP " + response.status + ").");
        });
      }
      return readStream(response, item).then(function (answer) {
        history.push({ role: "assistant", content: answer });
      });
    }).catch(function (err) {
      item.remove();
      history.pop();
      failed = content;
      var users = log.querySelectorAll(".pg-user");
      if (users.length) users[users.length - 1].classList.add("pg-failed");
      showError(err.message, status);
    }).then(function () {
      item.classList.remove("pg-pending");
      send.disabled = false;
      prompt.focus();
    });
  }

  form.addEventListener("submit", function (event) { event.preventDefault(); submit(); });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); submit(); }
  });
  root.querySelector("[data-pg-clear]").addEventListener("click", function () {
    history = [];
    failed = null;
    log.innerHTML = "";
    showError("");
  });
})();
