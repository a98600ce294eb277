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
