// The console's confirmations: a button with data-open="<dialog id>" opens that dialog
// (its form says what will change); data-close closes it. Delegated, so parts of a page
// that are refreshed in place keep working.
(function () {
  "use strict";
  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-open]");
    if (opener) {
      const dialog = document.getElementById(opener.dataset.open);
      if (dialog) dialog.showModal();
      return;
    }
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog").close();
  });
})();

// Figures that refresh themselves: each element marked data-live="<name>" is replaced by the
// same element of a fresh GET of this page every data-live-seconds (on <main>), so the
// figures move while the forms, and anything typed in them, are left alone. Nothing is
// fetched while the tab is hidden; a failed fetch is tried again next round.
(function () {
  "use strict";
  const main = document.querySelector("main[data-live-seconds]");
  if (!main || !document.querySelector("[data-live]")) return;
  const every = Number(main.dataset.liveSeconds) * 1000;
  async function refresh() {
    if (!document.hidden) {
      try {
        const response = await fetch(window.location.pathname, {credentials: "same-origin"});
        if (response.ok) {
          const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
          document.querySelectorAll("[data-live]").forEach((part) => {
            const next = fresh.querySelector(`[data-live="${part.dataset.live}"]`);
            if (next && next.innerHTML !== part.innerHTML) part.replaceWith(document.importNode(next, true));
          });
          main.dataset.refreshedAt = new Date().toISOString();
        }
      } catch (error) {
        // Offline for a moment: the figures stay as they were until the next round.
      }
    }
    window.setTimeout(refresh, every);
  }
  window.setTimeout(refresh, every);
})();

