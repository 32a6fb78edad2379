// A form shown again with problems: the first field to fix gets the focus.
(function () {
  "use strict";
  var first = document.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
})();

// The notification bell: the edge's live stream, relayed same-origin by the web process.
(function () {
  "use strict";
  var bell = document.getElementById("bell");
  if (!bell || !window.EventSource) return;
  var count = document.getElementById("bell-count");

  function show(event) {
    var note;
    try { note = JSON.parse(event.data); } catch (e) { return; }
    if (!note.read) count.textContent = String(parseInt(count.textContent || "0", 10) + 1);
    var toast = document.createElement("div");
    toast.className = "toast";
    toast.setAttribute("role", "status");
    toast.textContent = note.title + (note.body ? ": " + note.body : "");
    document.getElementById("toasts").appendChild(toast);
    setTimeout(function () { toast.remove(); }, 8000);
  }

  function connect() {
    var source = new EventSource(bell.getAttribute("data-stream"));
    source.addEventListener("notification", show);
    // A dropped connection is retried by the browser; a refused one (the web process
    // could not reach the edge) closes the source, so open a new one a little later.
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 5000);
    });
  }

  connect();
})();
