// The annotator workspace: keyboard first, and never waiting on the network between tasks.
// The next task is claimed (and its image loaded) while the current one is on screen; a
// submission is sent in the background while the next task is already shown.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("workspace-config").textContent);
  const stage = document.getElementById("stage");
  const labelButtons = [...document.querySelectorAll("#labels button")];
  const toastBox = document.getElementById("toast");

  let current = null;          // the task on screen
  let ahead = [];              // promises of tasks claimed in advance
  let lastSubmitted = null;    // {task, pending} for undo
  let shownAt = 0;
  let emptyTimer = null;

  const api = window.flywheelApi;  // labeling/api.js

  // A message about one task ("An end user ruled out 8", "Task 136 is back") is cleared as
  // soon as another task is shown: left up, it reads as being about the new one.
  function toast(message, aboutTask = null) {
    toastBox.textContent = message;
    toastBox.dataset.task = aboutTask === null ? "" : String(aboutTask);
    toastBox.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => toastBox.classList.remove("show"), 2600);
  }

  function toastClearIfStale() {
    const about = toastBox.dataset.task;
    if (about && about !== (current ? String(current.id) : "")) {
      clearTimeout(toast.timer);
      toastBox.classList.remove("show");
      toastBox.dataset.task = "";
    }
  }

  async function claim() {
    try {
      const {status, data} = await api("POST", config.next);
      if (status !== 200) return null;
      const task = data.task;
      if (task.prediction.image_url) { const preload = new Image(); preload.src = task.prediction.image_url; }
      return task;
    } catch (error) {
      return null;
    }
  }

  function keepOneAhead() {
    if (ahead.length === 0) ahead.push(claim());
  }

  async function advance() {
    current = ahead.length ? await ahead.shift() : await claim();
    keepOneAhead();
    render();
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
    if (text) node.textContent = text;
    return node;
  }

  function render() {
    toastClearIfStale();
    stage.replaceChildren();
    stage.dataset.task = current ? String(current.id) : "";
    labelButtons.forEach((button) => button.classList.remove("suggested", "chosen"));
    const meta = document.getElementById("task-meta");
    meta.replaceChildren();
    if (!current) {
      stage.append(el("p", {class: "empty"}, "The queue is empty. New tasks appear here as they arrive."));
      document.getElementById("suggested-label").textContent = "–";
      document.getElementById("suggested-confidence").textContent = "";
      document.getElementById("confidence-bar").style.width = "0";
      document.getElementById("runner-ups").textContent = "";
      clearTimeout(emptyTimer);
      emptyTimer = setTimeout(() => { ahead = []; advance(); }, 10000);
      return;
    }
    const prediction = current.prediction;
    if (prediction.image_url) {
      stage.append(el("img", {src: prediction.image_url, alt: "The input to label", id: "task-image"}));
    }
    if (prediction.text) stage.append(el("div", {class: "text"}, prediction.text));
    if (!prediction.image_url && !prediction.text) {
      const table = el("table");
      Object.entries(prediction.features).slice(0, 60).forEach(([name, value]) => {
        const row = el("tr");
        row.append(el("th", {}, name), el("td", {}, String(value)));
        table.append(row);
      });
      stage.append(table);
    }
    document.getElementById("suggested-label").textContent = prediction.label;
    document.getElementById("suggested-confidence").textContent = `${Math.round(prediction.confidence * 100)}%`;
    document.getElementById("confidence-bar").style.width = `${prediction.confidence * 100}%`;
    const others = Object.entries(prediction.probabilities || {})
      .filter(([label]) => label !== prediction.label).sort((a, b) => b[1] - a[1]).slice(0, 3);
    document.getElementById("runner-ups").textContent = others.length
      ? "then " + others.map(([label, p]) => `${label} ${Math.round(p * 100)}%`).join(" · ") : "";
    const ruledOut = new Set(prediction.ruled_out_labels || []);
    labelButtons.forEach((button) => {
      if (button.dataset.label === prediction.label) button.classList.add("suggested");
      button.disabled = ruledOut.has(button.dataset.label);
      button.title = button.disabled ? "Ruled out: an end user rejected this label" : "";
    });
    meta.append(el("span", {}, `task ${current.id}`), el("span", {}, current.reason.replace("_", " ")),
                el("span", {}, `model ${prediction.model_version}`));
    shownAt = performance.now();
  }

  function submit(label) {
    if (!current) return;
    if ((current.prediction.ruled_out_labels || []).includes(label)) {
      toast(`An end user ruled out "${label}" for this one.`, current.id);
      return;
    }
    const task = current;
    const button = labelButtons.find((b) => b.dataset.label === label);
    if (button) button.classList.add("chosen");
    const leadTime = (performance.now() - shownAt) / 1000;
    const pending = api("POST", `/api/v1/tasks/${task.id}/annotations/`, {label, lead_time_s: leadTime})
      .then(({status, data}) => {
        if (status === 409) toast("That task's lease had run out; it went back to the queue.");
        else if (status >= 400) toast(data && data.error ? data.error.message : "The label was not saved.");
        refreshCounters();
        return status;
      })
      .catch(() => { toast("The label could not be sent; check the connection."); return 0; });
    lastSubmitted = {task, pending};
    advance();
  }

  function skip() {
    if (!current) return;
    const task = current;
    api("POST", `/api/v1/tasks/${task.id}/skip/`).catch(() => toast("The skip could not be sent."));
    advance();
  }

  async function undo() {
    if (!lastSubmitted) { toast("Nothing to undo."); return; }
    const {task, pending} = lastSubmitted;
    lastSubmitted = null;
    if (await pending !== 201) { toast("The last label was not saved, so there is nothing to undo."); return; }
    const {status, data} = await api("POST", `/api/v1/tasks/${task.id}/undo/`);
    if (status !== 200) { toast(data && data.error ? data.error.message : "Undo is no longer possible."); return; }
    if (current) ahead.unshift(Promise.resolve(current));
    current = data.task;
    render();
    refreshCounters();
    toast(`Task ${task.id} is back: label it again.`, task.id);
  }

  async function refreshCounters() {
    const {status, data} = await api("GET", config.me);
    if (status !== 200) return;
    document.getElementById("done-today").textContent = data.done_today;
    document.getElementById("queue-depth").textContent = data.queue_depth;
    document.getElementById("gold-accuracy").textContent =
      data.gold.accuracy === null ? "–" : `${Math.round(data.gold.accuracy * 100)}%`;
  }

  async function heartbeat() {
    const held = [current, ...(await Promise.all(ahead))].filter(Boolean);
    for (const task of held) {
      const {status} = await api("POST", `/api/v1/tasks/${task.id}/heartbeat/`);
      if (status === 409 && task === current) { toast("This task's lease ran out."); advance(); }
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    const key = event.key.toLowerCase();
    if (event.key === "Enter") { event.preventDefault(); if (current) submit(current.prediction.label); }
    else if (key === "s") { event.preventDefault(); skip(); }
    else if (key === "u") { event.preventDefault(); undo(); }
    else if (config.keys[key] !== undefined) { event.preventDefault(); submit(config.keys[key]); }
  });
  labelButtons.forEach((button) => button.addEventListener("click", () => submit(button.dataset.label)));

  // Leaving the page hands held tasks back at once instead of when their leases expire.
  window.addEventListener("pagehide", () => {
    const held = [current];
    ahead.forEach((promise) => promise.then((task) => task && api("POST", `/api/v1/tasks/${task.id}/release/`,
      undefined, true)));
    held.filter(Boolean).forEach((task) => api("POST", `/api/v1/tasks/${task.id}/release/`, undefined, true));
  });

  setInterval(heartbeat, config.heartbeat_seconds * 1000);
  ahead.push(claim());
  advance();
})();
