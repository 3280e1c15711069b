// Live pages: regions marked data-live-url are re-fetched when a change event they care about
// arrives over /api/v1/events; data-live-reload regions reload the page. Forms change on their own
// (practitioner and date pickers) so the page needs no separate "show" press with a mouse.
(function () {
  "use strict";
  const regions = Array.from(document.querySelectorAll("[data-live-url], [data-live-reload]"));
  const timers = new WeakMap();

  function wants(region, event) {
    const entities = (region.dataset.liveEntities || "").split(" ").filter(Boolean);
    if (entities.length && !entities.includes(event.entity)) return false;
    const practitioner = region.dataset.livePractitioner;
    if (practitioner && event.practitioner_id && event.practitioner_id !== practitioner) return false;
    return true;
  }

  function busy(region) {
    // Someone is typing or choosing inside: redraw once they leave it, not under their fingers.
    const active = document.activeElement;
    return active && region.contains(active) && active.matches("input:not([type=radio]), select, textarea");
  }

  async function refresh(region) {
    if (region.hasAttribute("data-live-reload")) { window.location.reload(); return; }
    if (busy(region)) {
      region.addEventListener("focusout", () => schedule(region), { once: true });
      return;
    }
    const selected = region.querySelector("input[type=radio]:checked");
    const url = new URL(region.dataset.liveUrl, window.location.href);
    if (selected) url.searchParams.set("selected", selected.value);
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (!response.ok) return;
    const html = await response.text();
    // The choice may have changed while the fetch was out (a click just after the stream opened):
    // keep the one on screen now, not the one sent.
    const chosen = region.querySelector("input[type=radio]:checked") || selected;
    region.innerHTML = html;
    region.dataset.liveVersion = String(Number(region.dataset.liveVersion || "0") + 1);
    if (chosen) {
      const again = region.querySelector(`input[type=radio][value="${CSS.escape(chosen.value)}"]`);
      if (again) again.checked = true;
    }
    if (chosen && !region.querySelector("input[type=radio]:checked")) {
      const note = document.createElement("p");
      note.className = "error";
      note.setAttribute("role", "alert");
      note.textContent = "The time you chose has just been taken; please choose another.";
      region.prepend(note);
    }
  }

  function schedule(region) {
    clearTimeout(timers.get(region));
    timers.set(region, setTimeout(() => refresh(region), 100));
  }

  if (regions.length && "EventSource" in window) {
    const source = new EventSource("/api/v1/events");
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      regions.forEach((region) => { if (wants(region, event)) schedule(region); });
    };
    source.addEventListener("reload", () => window.location.reload());
    source.onopen = () => {
      // Whatever changed between this page being drawn and the stream opening is not replayed
      // (the page holds no event id): redraw the fragments once, so nothing falls in that gap.
      regions.forEach((region) => { if (region.hasAttribute("data-live-url")) schedule(region); });
      document.documentElement.setAttribute("data-live", "connected");
    };
  }

  document.querySelectorAll("form.toolbar select").forEach((input) => {
    input.addEventListener("change", () => input.form.requestSubmit());
  });
})();
