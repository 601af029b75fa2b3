/* Switchyard dashboard: small progressive enhancements (copy buttons, tabs, confirms, auto-submit). */
(function () {
  "use strict";

  function copyText(text, button) {
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () { button.textContent = old; button.classList.remove("copied"); }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text); done(); });
    } else {
      fallbackCopy(text);
      done();
    }
  }

  function fallbackCopy(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* nothing else to try */ }
    document.body.removeChild(area);
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy], [data-copy-target], [data-copy-from]");
    if (!button) return;
    var text = "";
    if (button.hasAttribute("data-copy")) {
      text = button.getAttribute("data-copy");
    } else if (button.hasAttribute("data-copy-target")) {
      var target = document.querySelector(button.getAttribute("data-copy-target"));
      if (target) { text = target.value || target.textContent; if (target.select) target.select(); }
    } else {
      var code = button.parentElement.querySelector("code");
      text = code ? code.textContent : "";
    }
    copyText(text, button);
  });

  // Tabs (WAI-ARIA pattern: arrow keys move between tabs).
  function selectTab(tab) {
    var list = tab.closest("[role=tablist]");
    var root = tab.closest("[data-tabs]");
    list.querySelectorAll("[role=tab]").forEach(function (t) {
      var on = t === tab;
      t.setAttribute("aria-selected", on ? "true" : "false");
      t.tabIndex = on ? 0 : -1;
      var panel = root.querySelector("#" + t.getAttribute("aria-controls"));
      if (panel) panel.hidden = !on;
    });
  }
  document.addEventListener("click", function (event) {
    var tab = event.target.closest("[role=tab]");
    if (tab) selectTab(tab);
  });
  document.addEventListener("keydown", function (event) {
    var tab = event.target.closest && event.target.closest("[role=tab]");
    if (!tab || (event.key !== "ArrowRight" && event.key !== "ArrowLeft")) return;
    var tabs = Array.prototype.slice.call(tab.closest("[role=tablist]").querySelectorAll("[role=tab]"));
    var i = tabs.indexOf(tab) + (event.key === "ArrowRight" ? 1 : -1);
    var next = tabs[(i + tabs.length) % tabs.length];
    selectTab(next);
    next.focus();
    event.preventDefault();
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // Dates: the server writes "Dec 3, 2026, 14:05 UTC"; here every <time data-format> is rewritten in
  // the browser's time zone, in that same one format (date, or date and time).
  var MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
  function pad(n) { return n < 10 ? "0" + n : String(n); }
  function localTimes(root) {
    (root || document).querySelectorAll("time[data-format]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var text = MONTHS[d.getMonth()] + " " + d.getDate() + ", " + d.getFullYear();
      if (el.getAttribute("data-format") === "datetime") text += ", " + pad(d.getHours()) + ":" + pad(d.getMinutes());
      el.textContent = text;
    });
  }
  localTimes();
  document.addEventListener("htmx:afterSettle", function (event) { localTimes(event.target); });

  // A region that scrolls sideways (a wide table, a long code sample) must be reachable from the
  // keyboard to scroll it: give it a tab stop only while it actually overflows.
  function markScrollers() {
    document.querySelectorAll(".table-wrap, pre.code").forEach(function (el) {
      if (el.scrollWidth > el.clientWidth + 1) {
        if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "0");
      } else if (el.getAttribute("tabindex") === "0") {
        el.removeAttribute("tabindex");
      }
    });
  }
  markScrollers();
  window.addEventListener("resize", markScrollers);
  document.addEventListener("htmx:afterSettle", markScrollers);

  // While htmx fetches, the region it will replace says so to assistive technology too.
  document.addEventListener("htmx:beforeRequest", function (event) {
    var target = document.getElementById("activity-results");
    if (target && event.target.closest && event.target.closest("[hx-indicator]")) target.setAttribute("aria-busy", "true");
  });
  document.addEventListener("htmx:afterRequest", function () {
    var target = document.getElementById("activity-results");
    if (target) target.removeAttribute("aria-busy");
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-autosubmit]")) event.target.form.requestSubmit();
  });
})();
