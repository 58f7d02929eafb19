// Telemetry charts on the device page: one uPlot chart per numeric field, for the window the
// radio buttons choose. The server sends raw points for the last hour and averages the
// database computes for the day and the week (ui/charts.py). Times are UTC on a 24-hour
// clock, as everywhere else on the page.
"use strict";

(function () {
  const holder = document.getElementById("charts");
  if (!holder || typeof uPlot === "undefined") return;
  const status = document.getElementById("chart-status");
  const picker = document.getElementById("chart-window");
  const colours = ["#0a4fb5", "#b5400a", "#0b6b2e", "#6b1fb5", "#8a4b00", "#a3161a"];
  const labels = { "1h": "the last hour", "24h": "the last day", "7d": "the last week" };
  let plots = [];

  function width() {
    return Math.max(260, holder.clientWidth - 8);
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  // Axis labels: "HH:MM", with the date under the first tick and under each midnight.
  function utcTicks(u, splits) {
    return splits.map(function (t, i) {
      const d = new Date(t * 1000);
      const time = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
      const midnight = d.getUTCHours() === 0 && d.getUTCMinutes() === 0;
      if (i === 0 || midnight) {
        return time + "\n" + d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" +
          pad(d.getUTCDate());
      }
      return time;
    });
  }

  // Tick placement (whole hours, days) in UTC too, not in the browser's zone.
  function utcDate(t) {
    return uPlot.tzDate(new Date(t * 1000), "Etc/UTC");
  }

  function describe(values) {
    const present = values.filter(function (v) { return v !== null; });
    if (!present.length) return "no values";
    const last = present[present.length - 1];
    const min = Math.min.apply(null, present);
    const max = Math.max.apply(null, present);
    return "latest " + last.toFixed(2) + ", min " + min.toFixed(2) + ", max " + max.toFixed(2);
  }

  function draw(data) {
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    holder.textContent = "";
    const names = Object.keys(data.fields);
    const windowText = labels[data.window] || data.window;
    if (!names.length) {
      status.textContent = "No numeric telemetry in " + windowText + ".";
      return;
    }
    const averaged = data.bucket ? " (averages per " + (data.bucket / 60) + " min)" : "";
    status.textContent = data.rows + " messages in " + windowText +
      (data.truncated ? " (only the newest ones)" : "") + ", " + data.t.length + " points" +
      averaged + ", times in UTC.";
    names.forEach(function (name, i) {
      const figure = document.createElement("figure");
      figure.className = "chart";
      figure.setAttribute("data-field", name);
      const caption = document.createElement("figcaption");
      caption.textContent = name + " ";
      const summary = document.createElement("span");
      summary.className = "summary";
      summary.textContent = "(" + describe(data.fields[name]) + ")";
      caption.appendChild(summary);
      const area = document.createElement("div");
      area.setAttribute("role", "img");
      area.setAttribute("aria-label", "Chart of " + name + " over " + windowText + ": " +
        describe(data.fields[name]));
      figure.appendChild(caption);
      figure.appendChild(area);
      holder.appendChild(figure);
      plots.push(new uPlot({
        width: width(),
        height: 180,
        scales: { x: { time: true, min: data.from, max: data.to } },
        tzDate: utcDate,
        axes: [{ values: utcTicks, size: 44 }, {}],
        legend: { show: false },
        series: [{}, { label: name, stroke: colours[i % colours.length], width: 1.5, spanGaps: true }],
      }, [data.t, data.fields[name]], area));
    });
  }

  async function load() {
    const choice = picker.querySelector("input:checked");
    const span = choice ? choice.value : "1h";
    status.textContent = "Loading telemetry…";
    try {
      const response = await fetch(holder.getAttribute("data-src") + "?window=" + span, {
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        location.assign("/ui/signin?next=" + encodeURIComponent(location.pathname));
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      draw(await response.json());
    } catch (err) {
      status.textContent = "Could not load telemetry: " + err.message;
    }
  }

  picker.addEventListener("change", load);
  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p.setSize({ width: width(), height: 180 }); });
  });
  load();
  setInterval(function () { if (!document.hidden) load(); }, 30000);
})();
