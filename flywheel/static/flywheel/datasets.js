// Dataset versions, live: rows drawn from the datasets API (the same serializer as the
// API's answer) and polled, every 2 s while a version is queued or building and every
// 15 s otherwise. A failed version's Retry calls the API's retry; its refusal (409) is
// shown on the row in the API's words.
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("datasets-config").textContent);
  const body = document.getElementById("versions");
  const BUSY = new Set(["queued", "building"]);
  const notes = {};  // version -> the last refusal of a retry, kept across redraws

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children) if (child !== null && child !== undefined) node.append(child);
    return node;
  }

  function counts(map) {
    const entries = Object.entries(map || {}).sort((a, b) => a[0].localeCompare(b[0], undefined, {numeric: true}));
    return entries.length ? entries.map(([k, v]) => `${k}: ${v}`).join(" · ") : "–";
  }

  function csrf() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function retry(version) {
    const response = await fetch(`${config.versions}${version}/retry/`, {
      method: "POST", credentials: "same-origin", headers: {"X-CSRFToken": csrf(), "Accept": "application/json"},
    });
    if (!response.ok) {
      const answer = await response.json().catch(() => ({}));
      notes[version] = (answer.error && answer.error.message) || `Refused (${response.status}).`;
    } else {
      delete notes[version];
    }
    poll();
  }

  function row(v) {
    const status = el("td", {}, el("span", {"class": "pill"}, v.status));
    if (BUSY.has(v.status)) {
      const share = Math.round((v.progress || 0) * 100);
      status.append(el("div", {"class": "stage-bar", "role": "progressbar", "aria-label": `Version ${v.version}`,
                               "aria-valuenow": String(share), "aria-valuemin": "0", "aria-valuemax": "100"},
                       el("div", {"style": `width:${share}%`})),
                    el("span", {"class": "muted"}, `${v.phase || v.status} ${share}%`));
    }
    if (v.error) status.append(el("div", {"class": "field-error"}, v.error));
    const actions = el("td", {});
    if (v.status === "ready") {
      actions.append(el("a", {"href": `${config.versions}${v.version}/export/jsonl/`}, "JSONL"), " ",
                     el("a", {"href": `${config.versions}${v.version}/export/csv/`}, "CSV"));
    } else if (v.status === "failed") {
      const button = el("button", {"type": "button", "class": "button"}, "Retry");
      button.addEventListener("click", () => retry(v.version));
      actions.append(button);
    }
    if (notes[v.version]) actions.append(el("div", {"class": "field-error"}, notes[v.version]));
    const made = [v.trigger, v.note].filter(Boolean).join(": ");
    // data-label names each cell for a narrow screen, where a version is a block, not a row.
    return el("tr", {"data-version": String(v.version), "data-status": v.status},
              el("td", {}, el("b", {}, `v${v.version}`), v.parent ? el("div", {"class": "muted"}, `from v${v.parent}`) : null),
              status, el("td", {"data-label": "rows"}, String(v.counts.rows)),
              el("td", {"data-label": "by label"}, counts(v.counts.by_label)),
              el("td", {"data-label": "by source"}, counts(v.counts.by_source)),
              el("td", {"data-label": "by split"}, counts(v.counts.by_split)),
              el("td", {"data-label": "made"}, made,
                 el("div", {"class": "muted"}, (v.created_at || "").slice(0, 16).replace("T", " "))),
              actions);
  }

  function render(versions) {
    body.replaceChildren(...(versions.length ? versions.map(row)
      : [el("tr", {}, el("td", {"colspan": "8", "class": "empty"}, "No dataset version yet."))]));
  }

  let timer = null;
  async function poll() {
    window.clearTimeout(timer);
    let wait = 15000;
    try {
      const response = await fetch(config.versions, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (response.ok) {
        const versions = await response.json();
        render(versions);
        if (versions.some((v) => BUSY.has(v.status))) wait = 2000;
      }
    } catch (error) { /* the next poll tries again */ }
    timer = window.setTimeout(poll, wait);
  }

  const initial = JSON.parse(document.getElementById("versions-initial").textContent);
  render(initial);
  timer = window.setTimeout(poll, initial.some((v) => BUSY.has(v.status)) ? 2000 : 15000);
})();
