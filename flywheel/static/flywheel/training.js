// Training runs, live: the list is drawn from the training-runs API (the same serializer
// as the API's answer) and polled, every 2 s while a run is queued or running and every
// 15 s otherwise. When a run ends, the models section is refreshed in place, because the
// gate may have promoted its candidate.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("training-config").textContent);
  const STAGES = [
    ["dataset", "Dataset", 0.0, 0.2], ["train", "Train", 0.2, 0.6], ["evaluate", "Evaluate", 0.6, 0.8],
    ["gate", "Gate", 0.8, 0.9], ["promote", "Promote", 0.9, 1.0],
  ];
  const ACTIVE = new Set(["queued", "running"]);
  const container = document.getElementById("runs");
  let active = new Set();

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  // Share of each stage done: stages before the current one are full, the current one
  // fills with the run's progress inside its span.
  function stageShare(run, index) {
    if (run.status === "succeeded") return 1;
    if (run.status === "queued") return 0;
    const stage = run.stage === "waiting" ? "train" : run.stage;
    const current = STAGES.findIndex((s) => s[0] === stage);
    if (current < 0 || index < current) return run.stage === "done" || index < current ? 1 : 0;
    if (index > current) return 0;
    const [, , start, end] = STAGES[index];
    return Math.max(0, Math.min(1, (run.progress - start) / (end - start)));
  }

  function renderRun(run) {
    const card = el("article", {"class": "run", "data-run": String(run.number), "data-status": run.status});
    const facts = [`#${run.number}`, run.status, `trigger ${run.trigger}`];
    if (run.dataset_version) facts.push(`dataset v${run.dataset_version}`);
    if (run.model_version) facts.push(`candidate ${run.model_version}`);
    if (run.champion) facts.push(`against ${run.champion}`);
    card.append(el("h3", {}, `Run ${facts.join(" · ")}`));
    const stages = el("div", {"class": "stages"});
    STAGES.forEach(([key, label], index) => {
      const share = stageShare(run, index);
      const current = run.status === "running" && (run.stage === key || (run.stage === "waiting" && key === "train"));
      const classes = ["stage-step"];
      if (share >= 1) classes.push("done");
      if (run.status === "failed" && current) classes.push("failed");
      const bar = el("div", {"class": "stage-bar", "role": "progressbar", "aria-label": label,
                            "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(share * 100))},
                     el("div", {"style": `width:${Math.round(share * 100)}%`}));
      stages.append(el("div", {"class": classes.join(" "), "data-stage": key},
                       `${label}${current ? " …" : ""}`, bar));
    });
    card.append(stages);
    if (run.gate && run.gate.passed !== null && run.gate.passed !== undefined) {
      const verdict = el("p", {"class": run.gate.passed ? "verdict-pass" : "verdict-fail", "data-testid": "gate"},
                         run.gate.passed ? "Gate passed" : "Gate refused",
                         run.promoted ? ": the candidate was promoted." : ": the champion stays.");
      const reasons = el("ul", {"class": "reasons"});
      for (const reason of run.gate.reasons) reasons.append(el("li", {}, reason));
      card.append(verdict, reasons);
    }
    if (run.error) card.append(el("p", {"class": "error"}, run.error));
    return card;
  }

  function render(runs) {
    container.replaceChildren(...(runs.length ? runs.map(renderRun)
      : [el("p", {"class": "empty"}, "No training run yet.")]));
  }

  async function refreshRegistry() {
    const response = await fetch(window.location.pathname, {credentials: "same-origin"});
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("registry");
    const current = document.getElementById("registry");
    if (fresh && current && !current.querySelector("dialog[open]")) current.replaceWith(fresh);
  }

  function schedule(runs) {
    const now = new Set(runs.filter((r) => ACTIVE.has(r.status)).map((r) => r.number));
    const ended = [...active].some((n) => !now.has(n));
    active = now;
    if (ended) refreshRegistry();
    window.setTimeout(poll, now.size ? 2000 : 15000);
  }

  async function poll() {
    try {
      const response = await fetch(config.runs, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (response.ok) {
        const runs = await response.json();
        render(runs);
        schedule(runs);
        return;
      }
    } catch (error) { /* the next poll tries again */ }
    window.setTimeout(poll, 15000);
  }

  const initial = JSON.parse(document.getElementById("runs-initial").textContent);
  render(initial);
  schedule(initial);
})();
