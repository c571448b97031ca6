/* meterdesk console: the CSRF header on every htmx request, dialogs, errors, the menu.
   No framework: htmx (vendored) does the requests; this file only wires the page. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrfToken();
    if (token) { event.detail.headers["X-CSRF-Token"] = token; }
  });

  /* Errors (4xx/5xx) are shown, not dropped: inside the nearest [data-errors] target of the
     element that asked, else in the toast at the bottom of the page. */
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr.status;
    if (status < 400 || event.detail.xhr.getResponseHeader("HX-Redirect")) { return; }
    var elt = event.detail.requestConfig ? event.detail.requestConfig.elt : null;
    var holder = elt && elt.closest ? elt.closest("[data-errors]") : null;
    var target = holder ? document.querySelector(holder.getAttribute("data-errors")) : null;
    if (!target) { target = document.getElementById("toast"); showToast(); }
    event.detail.shouldSwap = true;
    event.detail.isError = false;
    event.detail.target = target;
    event.detail.swapOverride = "innerHTML";
  });

  document.addEventListener("htmx:sendError", function () {
    var toast = document.getElementById("toast");
    if (toast) { toast.textContent = toast.getAttribute("data-offline") || "The server did not answer."; showToast(); }
  });

  var toastTimer = null;
  function showToast() {
    var toast = document.getElementById("toast");
    if (!toast) { return; }
    toast.classList.add("shown");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { toast.classList.remove("shown"); }, 8000);
  }

  /* A fragment loaded into the dialog opens it. */
  document.addEventListener("htmx:afterSwap", function (event) {
    var dialog = document.getElementById("dialog");
    if (dialog && event.detail.target && event.detail.target.id === "dialog-body" && !dialog.open) {
      dialog.showModal();
      var first = dialog.querySelector("input:not([type=hidden]), select, textarea");
      if (first) { first.focus(); }
    }
    drawCharts(event.detail.target);
  });

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) { return; }
    if (target.closest("[data-close-dialog]")) {
      var dialog = document.getElementById("dialog");
      if (dialog) { dialog.close(); }
    }
    var toggle = target.closest("[data-toggle]");
    if (toggle) {
      var menu = document.getElementById(toggle.getAttribute("data-toggle"));
      if (menu) { menu.classList.toggle("open"); }
    }
  });

  /* Charts: an element with data-chart="balance" and its points in a JSON script tag. */
  function drawCharts(root) {
    if (!window.echarts || !root || !root.querySelectorAll) { return; }
    root.querySelectorAll("[data-chart=balance]").forEach(function (holder) {
      var source = document.getElementById(holder.getAttribute("data-points"));
      var points = source ? JSON.parse(source.textContent || "[]") : [];
      var chart = window.echarts.getInstanceByDom(holder) || window.echarts.init(holder);
      chart.setOption({
        animation: false,
        grid: { left: 56, right: 16, top: 16, bottom: 40 },
        tooltip: { trigger: "axis", valueFormatter: function (v) { return holder.getAttribute("data-currency") + Number(v).toFixed(2); } },
        xAxis: { type: "time" },
        yAxis: { type: "value", scale: true },
        dataZoom: [{ type: "inside" }],
        series: [{ type: "line", step: "end", showSymbol: false, areaStyle: { opacity: 0.08 },
                   name: holder.getAttribute("data-label"),
                   data: points.map(function (p) { return [p[0], Number(p[1])]; }) }]
      });
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () { drawCharts(document); });
})();
