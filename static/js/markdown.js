/* Model answers as Markdown: parsed by the vendored marked, raw HTML in the answer kept as text, code
   blocks highlighted by highlight.js, the result sanitised by DOMPurify before it reaches the page,
   and a Copy button on every code block. Exposes window.SyMarkdown.render(element, text). */
(function () {
  "use strict";
  if (!window.marked || !window.DOMPurify) return;

  function escapeHtml(text) {
    return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
  }

  var parser = new marked.Marked({
    gfm: true,
    breaks: true,
    renderer: {
      // A model's answer is text: HTML in it (`<img onerror>`, `<script>`) is shown, never run or rendered.
      html: function (token) { return escapeHtml(token.text || token.raw || ""); },
      code: function (token) {
        var lang = (token.lang || "").trim().split(/\s+/)[0].toLowerCase();
        var body;
        if (window.hljs && lang && hljs.getLanguage(lang)) {
          body = hljs.highlight(token.text, { language: lang, ignoreIllegals: true }).value;
        } else if (window.hljs && token.text.length < 20000) {
          var guess = hljs.highlightAuto(token.text);
          body = guess.value;
          lang = guess.language || "";
        } else {
          body = escapeHtml(token.text);
        }
        return '<pre class="code md-code"><code class="hljs' + (lang ? " language-" + escapeHtml(lang) : "") + '">' + body + "</code></pre>";
      },
      image: function (token) { return escapeHtml(token.raw || ""); }, // no remote images in answers
    },
  });

  DOMPurify.addHook("afterSanitizeAttributes", function (node) {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer nofollow");
    }
  });

  function render(element, text) {
    var html = parser.parse(text || "");
    element.innerHTML = DOMPurify.sanitize(html, {
      USE_PROFILES: { html: true },
      FORBID_TAGS: ["style", "img", "form", "input", "button", "iframe", "svg", "math"],
      FORBID_ATTR: ["style"],
    });
    element.querySelectorAll("pre").forEach(function (pre) {
      var copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy-btn";
      copy.setAttribute("data-copy-from", "next");
      copy.textContent = "Copy";
      pre.insertBefore(copy, pre.firstChild);
    });
  }

  window.SyMarkdown = { render: render };
})();
