// The dashboard's only page script (besides charts.js): live regions and confirmations.
// Pages work without it; it keeps them current without a reload.
"use strict";

(function () {
  // An element with data-live-url is replaced by a fresh server rendering every few seconds.
  function startLive(region) {
    const url = region.getAttribute("data-live-url");
    const every = Number(region.getAttribute("data-live-interval")) || 3000;
    let busy = false;
    async function refresh() {
      // Skip while hidden, or while keyboard focus is inside: replacing it would lose focus.
      if (busy || document.hidden || region.contains(document.activeElement)) return;
      busy = true;
      try {
        const response = await fetch(url, {
          credentials: "same-origin",
          headers: { Accept: "text/html" },
          cache: "no-store",
        });
        if (response.status === 401) {
          const here = location.pathname + location.search;
          location.assign("/ui/signin?next=" + encodeURIComponent(here));
          return;
        }
        if (response.ok) {
          region.innerHTML = await response.text();
          region.removeAttribute("data-stale");
        } else {
          region.setAttribute("data-stale", "true");
        }
      } catch (err) {
        region.setAttribute("data-stale", "true"); // the server is away: try again later
      } finally {
        busy = false;
      }
    }
    setInterval(refresh, every);
    document.addEventListener("visibilitychange", refresh);
  }

  document.querySelectorAll("[data-live-url]").forEach(startLive);

  // A form with data-confirm asks before it submits (rotating credentials).
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });
})();
