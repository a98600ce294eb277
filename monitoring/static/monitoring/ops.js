// The ops dashboard's charts, drawn with Chart.js from the JSON the page embeds (#ops-data).
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("ops-data").textContent);
  const css = getComputedStyle(document.documentElement);
  const color = (name, fallback) => (css.getPropertyValue(name) || fallback).trim();
  const REFERENCE = color("--reference", "#94a3b8");
  const CURRENT = color("--accent", "#4f46e5");
  const BAD = color("--bad", "#dc2626");
  const INK = color("--ink-soft", "#475569");
  const GRID = color("--line", "#e2e8f0");
  const PALETTE = ["#4f46e5", "#0891b2", "#d97706", "#059669", "#db2777", "#7c3aed", "#65a30d", "#ea580c",
                   "#0284c7", "#be123c", "#4d7c0f", "#9333ea"];

  Chart.defaults.font.family = css.getPropertyValue("font-family") || "system-ui, sans-serif";
  Chart.defaults.font.size = 12;
  Chart.defaults.color = INK;
  Chart.defaults.borderColor = GRID;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.animation = false;  // dashboards redraw on load; motion adds nothing
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  const percent = (v) => (v * 100).toFixed(v < 0.1 ? 1 : 0) + "%";
  const shortTime = (iso) => {
    const d = new Date(iso);
    return d.toLocaleString(undefined, {month: "short", day: "numeric", hour: "2-digit", minute: "2-digit"});
  };

  function draw(id, config) {
    const canvas = document.getElementById(id);
    if (canvas) new Chart(canvas, config);
  }

  function compareBars(id, chart, options = {}) {
    const datasets = [];
    if (chart.reference) datasets.push({label: "reference", data: chart.reference, backgroundColor: REFERENCE});
    datasets.push({label: options.currentLabel || "current", data: chart.current,
                   backgroundColor: options.bad ? BAD : CURRENT});
    draw(id, {
      type: "bar",
      data: {labels: chart.labels, datasets},
      options: {
        categoryPercentage: 0.8, barPercentage: 0.9,
        scales: {
          y: {beginAtZero: true, ticks: {callback: percent}, grid: {color: GRID}},
          x: {grid: {display: false}, ticks: {maxRotation: 50, autoSkip: true}},
        },
        plugins: {tooltip: {callbacks: {label: (c) => `${c.dataset.label}: ${percent(c.parsed.y)}`}}},
      },
    });
  }

  // Drift over time: each field's effect size over the threshold its check applied (1 is the
  // dashed line), drifted checks marked; measured points joined by straight lines, not smoothed.
  const overTime = data.over_time;
  const picker = {
    search: document.getElementById("series-search"),
    shown: document.querySelector("[data-testid=series-shown]"),
  };
  // The fields picked are kept for this tab, so the page's own reload (below) keeps them.
  const PICKED = `ops-picked:${window.location.pathname}`;
  const countShown = (chart) => {
    const shown = overTime.series.filter((s, i) => chart.isDatasetVisible(i));
    if (picker.shown) picker.shown.textContent = `${shown.length} of ${overTime.series.length} fields shown`;
  };
  const remember = (chart) => window.sessionStorage.setItem(
    PICKED, JSON.stringify(overTime.series.filter((s, i) => chart.isDatasetVisible(i)).map((s) => s.name)));
  if (overTime) {
    const datasets = overTime.series.map((s, i) => {
      const hue = PALETTE[i % PALETTE.length];
      return {
        label: s.name, data: s.values, hidden: s.hidden, borderColor: hue, backgroundColor: hue,
        borderWidth: 2, tension: 0, spanGaps: true,
        pointRadius: s.drifted.map((d) => (d ? 5 : 2)),
        pointBackgroundColor: s.drifted.map((d) => (d ? BAD : hue)),
        pointBorderColor: s.drifted.map((d) => (d ? BAD : hue)),
      };
    });
    datasets.push({
      label: "drift line", data: overTime.times.map(() => overTime.threshold), borderColor: BAD,
      borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, fill: false,
    });
    draw("chart-over-time", {
      type: "line",
      data: {labels: overTime.times.map(shortTime), datasets},
      options: {
        interaction: {mode: "nearest", intersect: false},
        // On a narrow screen the legend goes under the chart, leaving it the width.
        onResize: (chart, size) => {
          const position = size.width < 560 ? "bottom" : "right";
          if (chart.options.plugins.legend.position !== position) {
            chart.options.plugins.legend.position = position;
            chart.update("none");
          }
        },
        scales: {y: {beginAtZero: true, title: {display: true, text: "effect size ÷ its threshold"}},
                 x: {grid: {display: false}}},
        plugins: {
          // Only the fields shown are listed: with dozens of fields a full legend takes the
          // chart's room. The rest are a search away (below).
          legend: {
            position: window.innerWidth < 640 ? "bottom" : "right",
            labels: {filter: (item) => !item.hidden},
            onClick: (event, item, legend) => {
              Chart.defaults.plugins.legend.onClick.call(legend, event, item, legend);
              countShown(legend.chart);
              remember(legend.chart);
            },
          },
          tooltip: {callbacks: {label: (c) => {
            const series = overTime.series[c.datasetIndex];
            if (!series) return `drift line: ${c.parsed.y}`;
            const effect = series.effect[c.dataIndex], threshold = series.thresholds[c.dataIndex];
            return `${series.name}: ${effect === null ? "–" : effect.toFixed(3)} / threshold ` +
              `${threshold === null ? "–" : threshold.toFixed(3)}`;
          }}},
        },
      },
    });
  }

  const overTimeChart = overTime && Chart.getChart("chart-over-time");
  if (overTimeChart) {
    const picked = JSON.parse(window.sessionStorage.getItem(PICKED) || "null");
    if (Array.isArray(picked)) {
      overTime.series.forEach((s, i) => overTimeChart.setDatasetVisibility(i, picked.includes(s.name)));
      overTimeChart.update();
    }
    countShown(overTimeChart);
    // Show the field typed (its exact name, else the first name that contains the text).
    const show = () => {
      const text = picker.search.value.trim().toLowerCase();
      if (!text) return;
      const names = overTime.series.map((s) => s.name.toLowerCase());
      let index = names.indexOf(text);
      if (index < 0) index = names.findIndex((name) => name.includes(text));
      if (index < 0) {
        picker.shown.textContent = `No field named like "${picker.search.value.trim()}".`;
        return;
      }
      overTimeChart.setDatasetVisibility(index, true);
      overTimeChart.update();
      picker.search.value = "";
      countShown(overTimeChart);
      remember(overTimeChart);
    };
    picker.search.addEventListener("keydown", (event) => {
      if (event.key === "Enter") { event.preventDefault(); show(); }
    });
    picker.search.addEventListener("change", show);  // picked from the list
    document.getElementById("series-show").addEventListener("click", show);
    document.getElementById("series-top").addEventListener("click", () => {
      picker.search.value = "";
      overTime.series.forEach((s, i) => overTimeChart.setDatasetVisibility(i, !s.hidden));
      overTimeChart.update();
      countShown(overTimeChart);
      window.sessionStorage.removeItem(PICKED);  // the top fields of each new load again
    });
  }

  // The drifted (or closest) fields: reference beside current.
  if (data.drifted) {
    data.drifted.fields.forEach((field, i) => compareBars(`chart-field-${i}`, field.chart, {bad: field.drifted}));
  }

  if (data.predictions) {
    compareBars("chart-labels", data.predictions.labels, {currentLabel: "last 24 h"});
    compareBars("chart-confidence", data.predictions.confidence, {currentLabel: "last 24 h"});
  }

  // An estimate with its interval per label (e.g. accuracy per model version, 95% CI).
  function intervalChart(id, chart) {
    draw(id, {
      type: "bar",
      data: {
        labels: chart.labels,
        datasets: [
          {type: "scatter", label: "estimate", data: chart.estimate.map((y, i) => ({x: chart.labels[i], y})),
           backgroundColor: color("--ink", "#0f172a"), pointRadius: 5},
          {label: "95% interval", data: chart.low.map((low, i) => [low, chart.high[i]]),
           backgroundColor: "rgba(79, 70, 229, 0.25)", borderColor: CURRENT, borderWidth: 1, maxBarThickness: 40},
        ],
      },
      // Zoomed to the intervals (accuracies near each other are the point), in steps of 10%.
      options: {scales: {x: {grid: {display: false}},
                         y: {min: Math.max(0, Math.floor(Math.min(...chart.low) * 10 - 1) / 10),
                             max: Math.min(1, Math.ceil(Math.max(...chart.high) * 10) / 10),
                             ticks: {callback: percent}}}},
    });
  }

  // Panels other apps provide: {labels, datasets: [{label, data}]}, or an interval chart.
  data.panels.forEach((panel) => {
    if (!panel.chart) return;
    if (panel.kind === "interval") {
      intervalChart(`chart-panel-${panel.key}`, panel.chart);
      return;
    }
    const stacked = panel.kind === "stacked_bar";
    draw(`chart-panel-${panel.key}`, {
      type: panel.kind === "line" ? "line" : "bar",
      data: {
        labels: panel.chart.labels,
        datasets: panel.chart.datasets.map((d, i) => ({...d, backgroundColor: PALETTE[i % PALETTE.length],
                                                         borderColor: PALETTE[i % PALETTE.length],
                                                         maxBarThickness: 72})),
      },
      options: {
        scales: {x: {stacked, grid: {display: false}}, y: {stacked, beginAtZero: true, ticks: {precision: 0}}},
        plugins: {legend: {display: panel.chart.datasets.length > 1}},
      },
    });
  });

  // The figures refresh by themselves: the page is loaded again every 5 minutes (checks run
  // hourly by default; the queue and labels move faster), unless the tab is hidden or a
  // field name is being typed.
  const RELOAD_MS = 5 * 60 * 1000;
  const reload = () => {
    if (document.hidden || (picker.search && picker.search.value)) {
      window.setTimeout(reload, RELOAD_MS);
      return;
    }
    window.location.reload();
  };
  window.setTimeout(reload, RELOAD_MS);
})();
