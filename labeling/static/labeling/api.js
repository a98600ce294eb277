// The session API calls of the labeling pages (/label/, /label/groups/): JSON in and out,
// with the CSRF token Django asks of a session's unsafe requests.
window.flywheelApi = (() => {
  "use strict";

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  return async function api(method, url, body, keepalive = false) {
    const response = await fetch(url, {
      method, keepalive, credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken(), "Accept": "application/json"},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (response.status !== 204) {
      try { data = await response.json(); } catch (error) { data = null; }
    }
    return {status: response.status, data};
  };
})();
