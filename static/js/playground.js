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

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function formatCost(cost) {
    if (cost === undefined || cost === null) return "—";
    // The API sends cost as an exact decimal number; keep its digits as written.
    return "$" + String(cost);
  }

  function request(messages, retried) {
    return getKey(retried).then(function (secret) {
      var body = {
        model: document.getElementById("pg-model").value,
        messages: messages,
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number(temperature.value),
        max_tokens: Number(document.getElementById("pg-max-tokens").value) || undefined,
      };
      return fetch(root.getAttribute("data-api"), {
        method: "POST",
        headers: { "Authorization": "Bearer " + secret, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      }).then(function (response) {
        if (response.status === 401 && !retried) return request(messages, true);
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
    if (!content) return;
    showError("");
    var system = document.getElementById("pg-system").value.trim();
    history.push({ role: "user", content: content });
    bubble("user", content);
    prompt.value = "";
    send.disabled = true;
    var item = bubble("assistant", "");
    item.classList.add("pg-pending");
    var messages = (system ? [{ role: "system", content: system }] : []).concat(history);
    request(messages, false).then(function (response) {
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          item.remove();
          history.pop();
          throw new Error((body.error && body.error.message) || "Request failed (HTTP " + response.status + ").");
        });
      }
      return readStream(response, item).then(function (answer) {
        history.push({ role: "assistant", content: answer });
      });
    }).catch(function (err) {
      showError(err.message);
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
    log.innerHTML = "";
    showError("");
  });
})();
