/* mptcplab report: draw every embedded figure with the bundled plotly.js; a click on a point with a URL opens it. */
(function () {
  "use strict";
  var config = {responsive: true, displaylogo: false};
  document.querySelectorAll("[data-figure]").forEach(function (div) {
    var source = document.getElementById(div.getAttribute("data-figure"));
    if (!source) { return; }
    var fig = JSON.parse(source.textContent);
    Plotly.newPlot(div, fig.data, fig.layout, config).then(function () {
      div.on("plotly_click", function (event) {
        var point = event.points && event.points[0];
        if (point && typeof point.customdata === "string") { window.location.href = point.customdata; }
      });
    });
  });
})();
