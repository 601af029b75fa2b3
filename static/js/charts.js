/* Activity charts: stacked bars per day from the JSON the page embeds (rendered with the vendored Chart.js). */
(function () {
  "use strict";
  var node = document.getElementById("chart-data");
  if (!node || !window.Chart) return;
  var data = JSON.parse(node.textContent);
  var palette = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#94a3b8"];
  var labels = data.labels.map(function (d) {
    var parts = d.split("-");
    return new Date(Date.UTC(+parts[0], +parts[1] - 1, +parts[2])).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  });
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.color = "#64748b";

  function draw(id, metric, format, integers) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: labels,
        datasets: data.series.map(function (s, i) {
          return {
            label: s.name,
            // Spend arrives as exact decimal strings; converting to a float here is for plotting only.
            data: s[metric].map(Number),
            backgroundColor: palette[i % palette.length],
            borderRadius: 3,
            maxBarThickness: 28,
          };
        }),
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
          y: { stacked: true, beginAtZero: true, grid: { color: "#eef2f7" }, ticks: { callback: format, maxTicksLimit: 5, precision: integers ? 0 : undefined } },
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true } },
          tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + format(ctx.raw); } } },
        },
      },
    });
  }
  var money = function (v) { return "$" + Number(v).toLocaleString(undefined, { maximumFractionDigits: v < 0.01 ? 6 : 2 }); };
  var count = function (v) { return Number(v).toLocaleString(); };
  draw("chart-spend", "spend", money);
  draw("chart-tokens", "tokens", count, true);
  draw("chart-requests", "requests", count, true);
})();
