// The group workspace: one group's members as a grid, labeled at once. Keyboard first:
// a label key labels the group, Enter accepts the suggestion, Space takes the member under
// the cursor out (arrows or j/k move it), x splits the group in two, u undoes the last
// change while the group is held. Members least like the rest come first and are marked.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("groups-config").textContent);
  const stage = document.getElementById("stage");
  const labelButtons = [...document.querySelectorAll("#labels button")];
  const toastBox = document.getElementById("toast");

  let group = null;      // the group on screen
  let held = [];         // other groups this annotator holds (the second half of a split)
  let out = new Set();   // task ids taken out of the group on screen
  let history = [];      // changes u undoes: task ids toggled
  let cursor = 0;
  let shownAt = 0;
  let busy = false;

  const api = window.flywheelApi;  // labeling/api.js

  function toast(message) {
    toastBox.textContent = message;
    toastBox.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => toastBox.classList.remove("show"), 2600);
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    Object.entries(attrs).forEach(([key, value]) => node.setAttribute(key, value));
    if (text) node.textContent = text;
    return node;
  }

  function show(next) {
    group = next;
    out = new Set();
    history = [];
    cursor = 0;
    render();
  }

  async function advance() {
    if (held.length) { show(held.shift()); return; }
    const {status, data} = await api("POST", config.next);
    show(status === 200 ? data.group : null);
    if (!group) setTimeout(() => { if (!group) advance(); }, 10000);
  }

  function memberCard(member, index) {
    const prediction = member.prediction;
    const card = el("button", {type: "button", class: "member", "data-task": String(member.task_id),
                               "aria-pressed": String(out.has(member.task_id))});
    if (member.atypical) {
      card.classList.add("atypical");
      card.append(el("span", {class: "pill atypical-pill badge"}, "odd one?"));
    }
    if (out.has(member.task_id)) card.classList.add("out");
    if (index === cursor) card.classList.add("cursor");
    if (prediction.image_url) {
      card.append(el("img", {src: prediction.image_url, alt: `Member ${member.task_id}`}));
    } else if (prediction.text) {
      card.append(el("div", {class: "snippet"}, prediction.text.slice(0, 280)));
    } else {
      const table = el("table");
      Object.entries(prediction.features).slice(0, 8).forEach(([name, value]) => {
        const row = el("tr");
        row.append(el("th", {}, name), el("td", {}, String(value)));
        table.append(row);
      });
      card.append(table);
    }
    card.title = `task ${member.task_id} · model says ${prediction.label} · distance ${member.distance.toFixed(3)}`;
    card.addEventListener("click", () => { cursor = index; toggle(); });
    return card;
  }

  function render() {
    stage.replaceChildren();
    stage.dataset.group = group ? String(group.id) : "";
    document.getElementById("group-id").textContent = group ? group.id : "–";
    document.getElementById("group-size").textContent = group ? group.members.length : 0;
    document.getElementById("group-out").textContent = out.size;
    labelButtons.forEach((button) => { button.classList.remove("suggested", "chosen"); button.disabled = false; });
    if (!group) {
      stage.append(el("p", {class: "empty"}, "No group to label. New groups appear as they are built."));
      document.getElementById("suggested-label").textContent = "–";
      return;
    }
    document.getElementById("suggested-label").textContent = group.suggested_label;
    labelButtons.forEach((button) => {
      if (button.dataset.label === group.suggested_label) button.classList.add("suggested");
    });
    const grid = el("div", {class: "members", id: "members"});
    group.members.forEach((member, index) => grid.append(memberCard(member, index)));
    stage.append(grid);
    if (!shownAt) shownAt = performance.now();
  }

  function toggle() {
    if (!group || !group.members.length) return;
    const taskId = group.members[cursor].task_id;
    if (out.has(taskId)) out.delete(taskId); else out.add(taskId);
    history.push(taskId);
    render();
  }

  function move(step) {
    if (!group) return;
    cursor = Math.max(0, Math.min(group.members.length - 1, cursor + step));
    render();
  }

  function undo() {
    if (!history.length) { toast("Nothing to undo."); return; }
    const taskId = history.pop();
    if (out.has(taskId)) out.delete(taskId); else out.add(taskId);
    render();
  }

  async function label(value) {
    if (!group || busy) return;
    const ruled = group.members.filter((m) => !out.has(m.task_id) && (m.prediction.ruled_out_labels || []).includes(value));
    if (ruled.length) { toast(`An end user ruled out "${value}" for ${ruled.length} member(s): take them out first.`); return; }
    busy = true;
    const button = labelButtons.find((b) => b.dataset.label === value);
    if (button) button.classList.add("chosen");
    const leadTime = (performance.now() - shownAt) / 1000;
    const {status, data} = await api("POST", `/api/v1/groups/${group.id}/annotations/`,
                                     {label: value, exclude: [...out], lead_time_s: leadTime});
    busy = false;
    if (status === 201) toast(`${data.labeled} labeled "${value}", ${data.returned} back to the queue.`);
    else if (status === 409) toast("This group's lease had run out; it went back to the queue.");
    else { toast(data && data.error ? data.error.message : "The label was not saved."); render(); return; }
    shownAt = 0;
    advance();
  }

  async function split() {
    if (!group || busy) return;
    busy = true;
    const {status, data} = await api("POST", `/api/v1/groups/${group.id}/split/`);
    busy = false;
    if (status !== 201) { toast(data && data.error ? data.error.message : "The group could not be split."); return; }
    held.unshift(data.groups[1]);
    show(data.groups[0]);
    toast(`Split: ${data.groups[0].size} here, ${data.groups[1].size} next.`);
  }

  async function heartbeat() {
    for (const g of [group, ...held].filter(Boolean)) {
      const {status} = await api("POST", `/api/v1/groups/${g.id}/heartbeat/`);
      if (status === 409 && g === group) { toast("This group's lease ran out."); advance(); }
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    const key = event.key.toLowerCase();
    if (event.key === "Enter") { event.preventDefault(); if (group) label(group.suggested_label); }
    else if (event.key === " ") { event.preventDefault(); toggle(); }
    else if (event.key === "ArrowRight" || key === "j") { event.preventDefault(); move(1); }
    else if (event.key === "ArrowLeft" || key === "k") { event.preventDefault(); move(-1); }
    else if (key === "x") { event.preventDefault(); split(); }
    else if (key === "u") { event.preventDefault(); undo(); }
    else if (config.keys[key] !== undefined) { event.preventDefault(); label(config.keys[key]); }
  });
  labelButtons.forEach((button) => button.addEventListener("click", () => label(button.dataset.label)));

  // Leaving the page hands held groups back at once instead of when their leases expire.
  window.addEventListener("pagehide", () => {
    [group, ...held].filter(Boolean).forEach((g) => api("POST", `/api/v1/groups/${g.id}/release/`, undefined, true));
  });

  setInterval(heartbeat, config.heartbeat_seconds * 1000);
  advance();
})();
