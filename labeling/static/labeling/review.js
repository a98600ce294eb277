// /review/: the first card waiting is the current one. A label key picks the label to
// keep, Enter accepts it, R puts the cursor in the reason field and Enter there rejects
// with that reason (the reason is stored with the review).
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("review-config").textContent);
  const current = () => document.querySelector(".review-item.current");

  document.addEventListener("keydown", (event) => {
    const card = current();
    if (!card || event.ctrlKey || event.metaKey || event.altKey) return;
    const form = card.querySelector("form");
    const reason = form.querySelector("input[name=reason]");
    if (event.target === reason) {
      if (event.key === "Enter") {
        event.preventDefault();
        form.requestSubmit(form.querySelector("button[value=reject]"));
      } else if (event.key === "Escape") {
        reason.blur();
      }
      return;
    }
    if (event.target.closest("input, select, textarea")) return;
    const key = event.key.toLowerCase();
    if (key === "enter") {
      event.preventDefault();
      form.requestSubmit(form.querySelector("button[value=accept]"));
    } else if (key === "r") {
      event.preventDefault();
      reason.focus();
    } else if (config.keys[key] !== undefined) {
      form.querySelector("select[name=label]").value = config.keys[key];
    }
  });
})();
