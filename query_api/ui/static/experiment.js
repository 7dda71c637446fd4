// One experiment: warnings, the nine counts per variant, the lift as interval bars, the cumulative
// conversion rate with its band, the definition (an editor for admins) and its history as a diff.
import { api, enc, session } from "./api.js";
import { cumulativeChart, intervalBars } from "./charts.js";
import { h, number, percent, statusBadge, when } from "./dom.js";
import { definitionEditor, definitionView } from "./editor.js";
import { historyDiff } from "./history.js";

const COUNT_COLUMNS = [
  ["variant_key", "Variant"], ["impressions", "Impressions"], ["cta_clicks", "CTA clicks"], ["form_starts", "Form starts"],
  ["form_submits", "Form submits"], ["conversions", "Conversions"], ["unique_sessions", "Unique sessions"],
  ["conversion_rate", "Conversion rate"], ["conversion_value_total", "Conversion value"],
];

export async function experimentPage(key, show) {
  const [results, series, definitions, history] = await Promise.all([
    api(`/api/v1/experiments/results?experiment_key=${enc(key)}`),
    api(`/api/v1/experiments/results/timeseries?experiment_key=${enc(key)}`).catch(() => null),
    api("/api/v1/experiments?include_archived=true"),
    api(`/api/v1/experiments/${enc(key)}/history`),
  ]);
  const result = results.data[0];
  const definition = definitions.data.find((e) => e.experiment_key === key);
  const reload = () => experimentPage(key, show);
  show(
    h("p", {}, h("a", { href: "#/" }, "← All experiments")),
    h("h1", {}, `${result.name} `, h("code", {}, key), " ", statusBadge(definition || result)),
    warnings(result, results.headers),
    countsTable(result),
    liftSection(result),
    phasesSection(result),
    timeseriesSection(series && series.data),
    session.isAdmin() && definition ? definitionEditor(definition, reload) : definitionView(definition || result),
    historyDiff(history.data),
  );
}

export function warnings(result, headers) {
  const analysis = result.analysis || {};
  const items = [];
  if (analysis.srm && analysis.srm.flagged) {
    items.push(`Sample ratio mismatch: the sessions per variant do not match the allocations (p = ${analysis.srm.p_value.toExponential(2)}). ${analysis.srm.message || "Check the assignment before trusting the comparison."}`);
  }
  const multi = analysis.multi_variant_sessions;
  if (multi && multi.count > 0) items.push(`${number(multi.count)} sessions saw more than one variant. ${multi.message || ""}`);
  for (const message of analysis.messages || []) items.push(typeof message === "string" ? message : message.message || JSON.stringify(message));
  // Freshness: whatever the answer says about being behind or stale.
  const freshness = result.freshness || {};
  for (const flag of ["stale", "behind"]) {
    if (result[flag] || freshness[flag]) items.push(freshness.message || result.message || `These results are ${flag}.`);
  }
  const source = headers.get("X-Abacus-Source");
  const notes = [];
  if (source === "events") notes.push("Computed from the raw events (the rollup is not live or a window was asked for).");
  if (source === "rollup") notes.push("From the live rollup.");
  if (source === "rollup+events") notes.push("Counts from the live rollup, the rest computed from the raw events.");
  return h("section", { "aria-labelledby": "warnings-title", class: "warnings" },
    h("h2", { id: "warnings-title" }, items.length ? `Warnings (${items.length})` : "Warnings"),
    items.length ? h("ul", {}, items.map((text) => h("li", {}, text))) : h("p", { class: "notice" }, "No warning: no sample ratio mismatch, no session in more than one variant."),
    h("p", { class: "notice", "data-source": source || "" }, notes.join(" ")));
}

function countsTable(result) {
  const rows = result.variants.map((variant) => h("tr", {}, COUNT_COLUMNS.map(([field], index) => {
    const value = variant[field];
    const text = field === "conversion_rate" ? percent(value, 2) : field === "conversion_value_total" ? Number(value).toFixed(2) : index === 0 ? value : number(value);
    return index === 0 ? h("th", { scope: "row" }, text) : h("td", {}, text);
  })));
  return h("section", { "aria-labelledby": "counts-title" },
    h("h2", { id: "counts-title" }, "Counts per variant"),
    h("table", {}, h("caption", {}, result.from || result.to ? `From ${result.from || "the start"} to ${result.to || "now"}` : "All time"),
      h("thead", {}, h("tr", {}, COUNT_COLUMNS.map(([, label]) => h("th", { scope: "col" }, label)))),
      h("tbody", {}, rows)));
}

function liftSection(result) {
  const analysis = result.analysis || {};
  const rows = [];
  const statuses = [];
  for (const variant of analysis.variants || []) {
    const rate = variant.comparison && variant.comparison.conversion_rate;
    if (variant.status_message) statuses.push(h("li", {}, h("strong", {}, `${variant.variant_key}: `), variant.status_message));
    if (!rate || !rate.absolute_lift || rate.absolute_lift.ci_low === null || rate.absolute_lift.ci_low === undefined) continue;
    rows.push({ label: variant.variant_key, estimate: rate.absolute_lift.estimate, low: rate.absolute_lift.ci_low, high: rate.absolute_lift.ci_high, significant: Boolean(rate.significant) });
  }
  const level = analysis.confidence ? `${Math.round(analysis.confidence * 100)}%` : "";
  return h("section", { "aria-labelledby": "lift-title" },
    h("h2", { id: "lift-title" }, `Conversion rate lift against ${analysis.control_variant_key || "control"} (${level} interval)`),
    rows.length ? intervalBars(rows, "Absolute lift of the conversion rate per variant, with its interval, against zero") : h("p", { class: "notice" }, "Not enough data for a comparison yet."),
    h("ul", {}, statuses));
}

// Every allocation phase of the definition history with its own sample-ratio check; the analysis
// above covers the current one (result.analysis_phase).
function phasesSection(result) {
  const phases = result.phases || [];
  const text = (object) => Object.entries(object || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  const rows = phases.map((p) => h("tr", {},
    h("th", { scope: "row" }, `${p.phase}${p.phase === result.analysis_phase ? " (analysed)" : ""}`),
    h("td", {}, when(p.start)), h("td", {}, p.end ? when(p.end) : "now"), h("td", {}, text(Object.fromEntries(Object.entries(p.allocations).map(([k, v]) => [k, `${v}%`])))),
    h("td", {}, text(p.sessions)),
    h("td", {}, p.srm.p_value === null || p.srm.p_value === undefined ? "–" : `p = ${p.srm.p_value.toPrecision(2)}${p.srm.flagged ? " (mismatch)" : ""}`)));
  return h("section", { "aria-labelledby": "phases-title" },
    h("h2", { id: "phases-title" }, "Allocation phases"),
    h("table", {}, h("caption", {}, result.analysis_phase === "all" ? "All phases analysed, stratified" : "Each change of allocations starts a phase"),
      h("thead", {}, h("tr", {}, ["Phase", "Start", "End", "Allocations", "Sessions", "Sample ratio check"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows)));
}

function timeseriesSection(series) {
  const variants = (series && series.variants) || [];
  const lines = variants.map((v) => ({ label: v.variant_key, points: v.points.map((p) => ({ ...p, rate: p.conversion_rate, low: p.ci_low, high: p.ci_high })) }));
  const legend = h("ul", { class: "legend", "aria-label": "Legend" }, variants.map((v, i) => h("li", {}, h("span", { class: "swatch", "data-index": i, "aria-hidden": "true" }), v.variant_key)));
  legend.querySelectorAll(".swatch").forEach((swatch) => swatch.classList.add(`c${swatch.dataset.index}`));
  return h("section", { "aria-labelledby": "timeseries-title" },
    h("h2", { id: "timeseries-title" }, `Cumulative conversion rate per ${series ? series.interval : "day"}`),
    lines.some((l) => l.points.length) ? [cumulativeChart(lines, "Cumulative conversion rate per variant with its interval band"), legend] : h("p", { class: "notice" }, "No exposed sessions yet."));
}
