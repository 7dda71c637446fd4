// The definition's history: each version against the one before, as removed and added lines of
// the definition flattened to "path: value" (so a changed allocation is one line out, one in).
import { h } from "./dom.js";

function flatten(value, path = "", lines = []) {
  if (Array.isArray(value)) {
    if (!value.length) lines.push(`${path}: []`);
    value.forEach((item, i) => flatten(item, `${path}[${i}]`, lines));
  } else if (value && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) flatten(item, path ? `${path}.${key}` : key, lines);
  } else {
    lines.push(`${path}: ${JSON.stringify(value)}`);
  }
  return lines;
}

export function historyDiff(entries) {
  const items = [];
  let before = [];
  for (const entry of entries) {
    const after = flatten({ ...entry.definition, archived: entry.archived });
    const removed = before.filter((line) => !after.includes(line));
    const added = after.filter((line) => !before.includes(line));
    const changes = [...removed.map((l) => h("del", {}, h("span", { class: "visually-hidden" }, "removed: "), `− ${l}`)),
      ...added.map((l) => h("ins", {}, h("span", { class: "visually-hidden" }, "added: "), `+ ${l}`))];
    items.unshift(h("li", {},
      h("h3", {}, `Version ${entry.version}: ${entry.action} by ${entry.changed_by}, ${entry.changed_at.slice(0, 19).replace("T", " ")} UTC`),
      changes.length ? h("div", { class: "diff" }, changes) : h("p", { class: "notice" }, "No change to the definition.")));
    before = after;
  }
  return h("section", { "aria-labelledby": "history-title" },
    h("h2", { id: "history-title" }, "Definition history"),
    h("ol", { reversed: true }, items));
}
