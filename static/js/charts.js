/* Dashboard charts from the JSON the page embeds (rendered with the vendored Chart.js): the activity page's
   stacked bars per day, the overview's week of spend (bars) and requests (a line), and a model page's
   live provider health (lines per minute). */
(function () {
  "use strict";
  if (!window.Chart) return;

  var palette = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#94a3b8"];

  // Colours follow the theme (light or dark) the page has when the charts are drawn; returns the grid's.
  function themeGrid() {
    var style = getComputedStyle(document.documentElement);
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.color = style.getPropertyValue("--muted").trim() || "#5b6779";
    return style.getPropertyValue("--border").trim() || "#eef2f7";
  }

  // A filter change or a redraw swaps the canvases: drop the charts drawn on the ones it replaced.
  function destroy(ids) {
    ids.forEach(function (id) {
      var old = Chart.getChart(id);
      if (old) old.destroy();
    });
  }

  function render() {
  var node = document.getElementById("chart-data");
  if (!node) return;
  var data = JSON.parse(node.textContent);
  destroy(["chart-spend", "chart-tokens", "chart-requests", "chart-week"]);  // htmx swapped them
  var labels = data.labels.map(function (d) {
    var parts = d.split("-");
    return new Date(Date.UTC(+parts[0], +parts[1] - 1, +parts[2])).toLocaleDateString(undefined, { month: "short", day: "numeric", timeZone: "UTC" });
  });
  var grid = themeGrid();

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
          y: { stacked: true, beginAtZero: true, grid: { color: grid }, ticks: { callback: format, maxTicksLimit: 5, precision: integers ? 0 : undefined } },
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
  function drawWeek(id) {
    var canvas = document.getElementById(id);
    if (!canvas || !data.series.length) return;
    var total = data.series[0];
    new Chart(canvas, {
      data: {
        labels: labels,
        datasets: [
          {
            type: "line",
            label: "Requests",
            data: total.requests,
            yAxisID: "requests",
            borderColor: palette[1],
            backgroundColor: palette[1],
            borderWidth: 2,
            pointRadius: 3,
            tension: 0, // straight segments: a curve would invent values between days
            order: 0,
          },
          {
            type: "bar",
            label: "Spend",
            data: total.spend.map(Number), // exact decimal strings; a float for plotting only
            yAxisID: "spend",
            backgroundColor: palette[0],
            borderRadius: 3,
            maxBarThickness: 36,
            order: 1,
          },
        ],
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 8 } },
          spend: { position: "left", beginAtZero: true, grid: { color: grid }, ticks: { callback: money, maxTicksLimit: 5 } },
          requests: { position: "right", beginAtZero: true, grid: { display: false }, ticks: { callback: count, maxTicksLimit: 5, precision: 0 } },
        },
        plugins: {
          legend: {
            position: "bottom",
            reverse: true,
            labels: {
              boxWidth: 10,
              boxHeight: 10,
              usePointStyle: true,
              // The line's border would draw its dot larger than the bars' one.
              generateLabels: function (chart) {
                return Chart.defaults.plugins.legend.labels.generateLabels(chart).map(function (item) {
                  item.lineWidth = 0;
                  return item;
                });
              },
            },
          },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                var raw = ctx.dataset.yAxisID === "spend" ? "$" + total.spend[ctx.dataIndex] : count(ctx.raw);
                return ctx.dataset.label + ": " + raw;
              },
            },
          },
        },
      },
    });
    canvas.dataset.chartReady = "true";
  }
  draw("chart-spend", "spend", money);
  draw("chart-tokens", "tokens", count, true);
  draw("chart-requests", "requests", count, true);
  drawWeek("chart-week");
  }

  // Model pages: one line per provider, minute by minute over the router's health window; a minute
  // without requests is a gap, not a zero.
  function renderHealth() {
    var node = document.getElementById("health-data");
    if (!node) return;
    var data = JSON.parse(node.textContent);
    destroy(["chart-uptime", "chart-latency", "chart-throughput"]);
    var grid = themeGrid();
    var labels = data.minutes.map(function (t) {
      return new Date(t * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
    });
    function line(id, metric, unit, max) {
      var canvas = document.getElementById(id);
      if (!canvas) return;
      new Chart(canvas, {
        type: "line",
        data: {
          labels: labels,
          datasets: data.series.map(function (s, i) {
            return {
              label: s.name,
              data: s[metric] || [],
              borderColor: palette[i % palette.length],
              backgroundColor: palette[i % palette.length],
              borderWidth: 2,
              pointRadius: 2,
              tension: 0,
              spanGaps: false,
            };
          }),
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          animation: false,
          interaction: { mode: "index", intersect: false },
          scales: {
            x: { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 16 } },
            y: { beginAtZero: true, suggestedMax: max, grid: { color: grid }, ticks: { maxTicksLimit: 5, callback: function (v) { return v + unit; } } },
          },
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 10, boxHeight: 10, usePointStyle: true } },
            tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + (ctx.raw === null ? "no requests" : ctx.raw + unit); } } },
          },
        },
      });
      canvas.dataset.chartReady = "true";
    }
    line("chart-uptime", "uptime", "%", 100);
    line("chart-latency", "latency_ms", " ms");
    line("chart-throughput", "throughput", " tok/s");
  }

  render();
  renderHealth();
  document.addEventListener("sy:themechange", render);
  document.addEventListener("sy:themechange", renderHealth);
  document.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "activity-results") render();
  });
})();
