// Two SVG charts, each labelled for screen readers (role="img" with a title and a description
// that states the numbers drawn): interval bars of the lift against zero, and the cumulative
// conversion rate per variant with its interval band.
import { COLORS, percent, s } from "./dom.js";

let chartIds = 0;

function labelled(svg, title, description) {
  const id = `chart-${++chartIds}`;
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-labelledby", `${id}-title ${id}-desc`);
  svg.prepend(s("title", { id: `${id}-title` }, title), s("desc", { id: `${id}-desc` }, description));
  return svg;
}

// rows: [{label, estimate, low, high, significant}] in absolute rate (0.05 = 5 points).
export function intervalBars(rows, title) {
  const width = 720, left = 190, right = 30, rowHeight = 34, top = 28;
  const height = top + rows.length * rowHeight + 26;
  const values = rows.flatMap((r) => [r.low, r.high, 0]).filter((v) => Number.isFinite(v));
  let min = Math.min(...values), max = Math.max(...values);
  const pad = (max - min || 0.01) * 0.12;
  min -= pad; max += pad;
  const x = (v) => left + ((v - min) / (max - min)) * (width - left - right);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, "data-chart": "lift" });
  svg.append(s("line", { x1: x(0), x2: x(0), y1: top - 8, y2: height - 22, stroke: "#57606a", "stroke-dasharray": "4 3" }));
  svg.append(s("text", { x: x(0), y: top - 12, "text-anchor": "middle" }, "0 (no difference)"));
  rows.forEach((row, index) => {
    const y = top + index * rowHeight + rowHeight / 2;
    const color = row.significant ? (row.estimate > 0 ? "#1a7f37" : "#cf222e") : "#0969da";
    svg.append(s("text", { x: left - 10, y: y + 4, "text-anchor": "end" }, row.label));
    svg.append(s("rect", { class: "interval", x: x(row.low), y: y - 7, width: Math.max(2, x(row.high) - x(row.low)), height: 14, rx: 3, fill: color, "fill-opacity": 0.35, stroke: color }));
    svg.append(s("circle", { cx: x(row.estimate), cy: y, r: 5, fill: color }));
  });
  svg.append(s("text", { x: left, y: height - 6 }, `${percent(min)} `));
  svg.append(s("text", { x: width - right, y: height - 6, "text-anchor": "end" }, percent(max)));
  const described = rows.map((r) => `${r.label}: ${percent(r.estimate, 2)} points (interval ${percent(r.low, 2)} to ${percent(r.high, 2)})${r.significant ? ", significant" : ""}`).join("; ");
  return labelled(svg, title, described || "No comparison yet.");
}

// series: [{label, points: [{bucket, rate, low, high}]}]
export function cumulativeChart(series, title) {
  const width = 720, height = 300, left = 56, right = 20, top = 16, bottom = 40;
  const times = [...new Set(series.flatMap((v) => v.points.map((p) => p.bucket)))].sort();
  const highs = series.flatMap((v) => v.points.map((p) => p.high)).filter(Number.isFinite);
  // Headroom above the highest interval, but a rate never goes past 100 %.
  const max = Math.min(1, Math.max(0.01, ...highs) * 1.1);
  const x = (bucket) => left + (times.length < 2 ? (width - left - right) / 2 : (times.indexOf(bucket) / (times.length - 1)) * (width - left - right));
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, "data-chart": "timeseries" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    svg.append(s("line", { x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: "#d0d7de" }));
    svg.append(s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, percent(v)));
  }
  if (times.length) {
    svg.append(s("text", { x: left, y: height - 14 }, times[0].slice(0, 16).replace("T", " ")));
    svg.append(s("text", { x: width - right, y: height - 14, "text-anchor": "end" }, times[times.length - 1].slice(0, 16).replace("T", " ")));
  }
  series.forEach((variant, index) => {
    const color = COLORS[index % COLORS.length];
    const points = variant.points.filter((p) => Number.isFinite(p.rate));
    if (!points.length) return;
    const upper = points.map((p) => `${x(p.bucket)},${y(p.high ?? p.rate)}`);
    const lower = points.slice().reverse().map((p) => `${x(p.bucket)},${y(p.low ?? p.rate)}`);
    if (points.length === 1) {
      // One bucket so far: the band is the interval at that moment, drawn as a bar.
      const p = points[0];
      svg.append(s("rect", { class: "band", x: x(p.bucket) - 8 + index * 4, y: y(p.high ?? p.rate), width: 16, height: Math.max(1, y(p.low ?? p.rate) - y(p.high ?? p.rate)), fill: color, "fill-opacity": 0.25 }));
    } else {
      svg.append(s("polygon", { class: "band", points: [...upper, ...lower].join(" "), fill: color, "fill-opacity": 0.15 }));
    }
    svg.append(s("polyline", { class: "line", points: points.map((p) => `${x(p.bucket)},${y(p.rate)}`).join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    for (const p of points) svg.append(s("circle", { cx: x(p.bucket), cy: y(p.rate), r: 2.5, fill: color }));
  });
  const described = series.map((v) => {
    const last = v.points[v.points.length - 1];
    return last ? `${v.label}: ${percent(last.rate, 2)} after ${last.exposed_sessions} sessions (interval ${percent(last.low, 2)} to ${percent(last.high, 2)})` : `${v.label}: no data`;
  }).join("; ");
  return labelled(svg, title, described || "No data yet.");
}
