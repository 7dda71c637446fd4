// A tiny element builder: h("p", {class: "x"}, "text", child). Text is always set as text, never
// parsed as HTML, so nothing the API returns can inject markup.
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "value") element.value = value;
    else if (name === "checked") element.checked = Boolean(value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

const SVG = "http://www.w3.org/2000/svg";
export function s(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, String(value));
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function announce(message) {
  const region = document.getElementById("announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = message; }, 30);
}

export const percent = (x, digits = 1) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(digits)}%`);
// An instant from the API (ISO 8601) as a reader scans it: "2026-01-12 12:00 UTC".
export const when = (iso) => (iso ? `${new Date(iso).toISOString().slice(0, 16).replace("T", " ")} UTC` : "–");
export const number = (x) => (x === null || x === undefined ? "–" : Number(x).toLocaleString("en-US"));
export const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#bf3989", "#6e7781"];

// siteOn: the kill switch's state; an enabled experiment does not run while it is off.
export function statusBadge(experiment, siteOn = true) {
  const status = experiment.archived ? "archived" : !experiment.enabled ? "disabled" : siteOn ? "running" : "paused";
  const label = status === "paused" ? "paused (kill switch)" : status;
  return h("span", { class: `status ${status}` }, label);
}
