// loyaltyd console: small enhancements over pages that work without JavaScript.
// External file only (the CSP allows no inline script); event delegation, so fragments htmx
// swaps in work too.
(function () {
  "use strict";

  function updateCount(area) {
    var target = document.getElementById(area.getAttribute("data-count"));
    if (target) { target.textContent = area.value.trim().length + " / " + area.maxLength; }
  }

  function showSegment() {
    var chosen = document.querySelector("input[data-segment]:checked");
    document.querySelectorAll(".segment-params").forEach(function (box) {
      box.classList.toggle("hidden", !chosen || box.getAttribute("data-for") !== chosen.value);
    });
  }

  function showWhen() {
    var later = document.querySelector("input[data-when][value=later]");
    document.querySelectorAll(".when-later").forEach(function (input) {
      input.classList.toggle("hidden", !(later && later.checked));
    });
  }

  function showZone(select) {
    var option = select.options[select.selectedIndex];
    document.querySelectorAll("[data-zone-name]").forEach(function (span) {
      span.textContent = option ? option.getAttribute("data-zone") : "";
    });
  }

  function guardTyped(input) {
    var form = input.form;
    var button = form && form.querySelector("button[type=submit]");
    if (button) { button.disabled = input.value.replace(/[,\s]/g, "") !== input.getAttribute("data-must-equal"); }
  }

  document.addEventListener("input", function (event) {
    var el = event.target;
    if (el.matches && el.matches("textarea[data-count]")) { updateCount(el); }
    if (el.matches && el.matches("input[data-must-equal]")) { guardTyped(el); }
  });

  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el.matches && el.matches("input[data-segment]")) { showSegment(); }
    if (el.matches && el.matches("input[data-when]")) { showWhen(); }
    if (el.matches && el.matches("select#program")) { showZone(el); }
  });

  document.addEventListener("click", function (event) {
    var opener = event.target.closest && event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog && dialog.showModal) {
        event.preventDefault();
        dialog.showModal();
        var typed = dialog.querySelector("input[data-must-equal]");
        if (typed) { guardTyped(typed); typed.focus(); }
      }
      return;
    }
    var closer = event.target.closest && event.target.closest("[data-close]");
    if (closer) {
      var open = closer.closest("dialog");
      if (open) { open.close(); }
      return;
    }
    var chip = event.target.closest && event.target.closest("[data-insert]");
    if (chip) {
      var area = document.getElementById(chip.getAttribute("data-target"));
      if (!area) { return; }
      var text = chip.getAttribute("data-insert");
      var start = area.selectionStart || 0, end = area.selectionEnd || 0;
      area.value = area.value.slice(0, start) + text + area.value.slice(end);
      area.focus();
      area.selectionStart = area.selectionEnd = start + text.length;
      area.dispatchEvent(new Event("input", { bubbles: true }));
    }
  });

  // A fragment holding an open dialog is not swapped while a person uses it: it is marked
  // stale and fetched again once the dialog closes.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    if (target && target.querySelector && target.querySelector("dialog[open]")) {
      event.detail.shouldSwap = false;
      target.setAttribute("data-stale", "");
    }
  });

  document.addEventListener("close", function (event) {
    var stale = event.target.closest && event.target.closest("[data-stale]");
    if (stale && window.htmx) {
      stale.removeAttribute("data-stale");
      window.htmx.trigger(stale, "changed");
    }
  }, true);

  // "Something changed" from the server (one stream per page): each element that shows that
  // thing fetches itself again (hx-trigger="changed"). A hidden tab holds no stream; shown
  // again, it opens one, and every opening refreshes what the page shows. The browser reconnects a dropped stream
  // by itself; one the server refused (too many live pages) is tried again later, slower each
  // time. An interrupted stream is not an error worth a word.
  var source = null, retryIn = 10000, retryTimer = null;

  // name null: everything (what sits inside a region that is refreshed comes along with it).
  function refreshAll(name) {
    document.querySelectorAll("[data-on]").forEach(function (el) {
      var wanted = name === null ? !el.parentElement.closest("[data-on]")
        : el.getAttribute("data-on").split(" ").indexOf(name) >= 0;
      if (wanted) { window.htmx.trigger(el, "changed"); }
    });
  }

  function closeStream() {
    if (retryTimer) { clearTimeout(retryTimer); retryTimer = null; }
    if (source) { source.close(); source = null; }
  }

  function openStream(url) {
    closeStream();
    source = new EventSource(url);
    // What changed before the stream was open (since the page was drawn, or while a dropped
    // stream reconnected) was never announced on it: each opening refreshes what is shown.
    source.onopen = function () { retryIn = 10000; refreshAll(null); };
    source.onmessage = function (event) { refreshAll(event.data); };
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        retryTimer = setTimeout(function () { openStream(url); }, retryIn * (1 + Math.random() / 2));
        retryIn = Math.min(retryIn * 2, 120000);
      }
    };
  }

  function listen() {
    var main = document.querySelector("main[data-events]");
    if (!main || !window.EventSource || !window.htmx) { return; }
    var url = main.getAttribute("data-events");
    if (!document.hidden) { openStream(url); }
    document.addEventListener("visibilitychange", function () {
      if (document.hidden) { closeStream(); return; }
      if (!source) { openStream(url); }
    });
    window.addEventListener("pagehide", closeStream);
  }

  document.addEventListener("DOMContentLoaded", function () {
    showSegment();
    showWhen();
    document.querySelectorAll("textarea[data-count]").forEach(updateCount);
    listen();
  });
})();
