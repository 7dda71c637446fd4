// The definition: read-only for analysts; for admins a form whose Save sends PUT with If-Match,
// shows the API's validation error next to the field it names (by its JSON path), asks before a
// change the API answers 409 to (force=true), and offers archive / restore.
import { api, ApiError, enc } from "./api.js";
import { announce, h } from "./dom.js";

export function definitionView(definition) {
  const rows = [
    ["Name", definition.name], ["Description", definition.description || "–"], ["Cookie", definition.cookie_name],
    ["Enabled", definition.enabled ? "yes" : "no"], ["Eligible routes", (definition.eligible_routes || []).join(", ") || "all"],
    ["Variants", (definition.variants || []).map((v) => `${v.variant_key} (${v.label}) ${v.allocation}%${v.is_control ? ", control" : ""}`).join("; ")],
    ["Primary metric", definition.primary_metric || "conversion"],
    ["Guardrail metrics", (definition.guardrail_metrics || []).join(", ") || "none"],
    ["Planned sessions", definition.planned_sessions ?? (definition.target_mde != null ? `from a target MDE of ${definition.target_mde * 100}%` : "default")],
    ["Value cap", definition.value_cap_percentile != null ? `${definition.value_cap_percentile}th percentile` : "none"],
    ["Version", definition.version],
  ];
  return h("section", { "aria-labelledby": "definition-title" },
    h("h2", { id: "definition-title" }, "Definition"),
    h("dl", { class: "definition" }, rows.map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)])),
    h("p", { class: "notice" }, "Read-only: only admins change definitions."));
}

let fieldIds = 0;
function field(path, label, control, help) {
  const id = `f${++fieldIds}`;
  control.id = id;
  control.dataset.path = path;
  const error = h("span", { class: "field-error", id: `${id}-error`, "data-error-for": path, role: "alert" });
  control.setAttribute("aria-describedby", `${id}-error`);
  return h("div", {}, h("label", { for: id }, label), help ? h("span", { class: "notice" }, help) : null, control, error);
}

export function definitionEditor(definition, reload) {
  const form = h("form", { "aria-labelledby": "definition-title", novalidate: true });
  const name = h("input", { type: "text", value: definition.name });
  const description = h("textarea", { rows: 2 }, definition.description);
  const cookie = h("input", { type: "text", value: definition.cookie_name });
  const enabled = h("input", { type: "checkbox", checked: definition.enabled });
  const routes = h("textarea", { rows: 2 }, (definition.eligible_routes || []).join("\n"));
  const variantRows = definition.variants.map((v, i) => variantRow(v, i));
  // The analysis settings: an empty box sends null (the documented default).
  const optional = (value) => h("input", { type: "number", step: "any", value: value ?? "" });
  const planned = optional(definition.planned_sessions);
  const targetMde = optional(definition.target_mde);
  const cap = optional(definition.value_cap_percentile);
  const primary = h("input", { type: "text", value: definition.primary_metric || "conversion" });
  const guardrails = h("input", { type: "text", value: (definition.guardrail_metrics || []).join(", ") });
  const variantsError = h("span", { class: "field-error", id: "variants-error", "data-error-for": "$.variants", role: "alert" });
  const variantsTable = h("table", { class: "variants-edit", "aria-describedby": "variants-error", "data-path": "$.variants" },
    h("caption", {}, "Variants (allocations in percent, summing to 100; exactly one control)"),
    h("thead", {}, h("tr", {}, ["Key", "Label", "Allocation", "Control"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, variantRows.map((r) => r.row)));
  const outcome = h("p", { role: "status", "aria-live": "polite", id: "save-outcome" });
  const confirmArea = h("div", { class: "row" });
  const save = h("button", { type: "submit", class: "primary" }, "Save");
  form.append(
    h("h2", { id: "definition-title" }, `Definition (version ${definition.version})`),
    field("$.name", "Name", name),
    field("$.description", "Description", description),
    field("$.cookie_name", "Cookie name", cookie),
    h("div", {}, h("label", {}, enabled, " Enabled (visitors are assigned while it runs)")),
    field("$.eligible_routes", "Eligible routes", routes, " one path per line, each starting with /"),
    variantsTable, variantsError,
    field("$.primary_metric", "Primary metric", primary, " conversion, value_per_session, an event type, or numerator/denominator"),
    field("$.guardrail_metrics", "Guardrail metrics", guardrails, " comma-separated; empty for none"),
    field("$.planned_sessions", "Planned sessions", planned, " exposed sessions the experiment plans (tunes sequential results); empty for the default"),
    field("$.target_mde", "Target minimum detectable effect", targetMde, " relative, 0.05 = +5%; instead of planned sessions"),
    field("$.value_cap_percentile", "Value cap percentile", cap, " winsorize value per session, e.g. 99; empty for none"),
    h("div", { class: "row" }, save, archiveButton(definition, reload, outcome)),
    confirmArea, outcome);
  enabled.dataset.path = "$.enabled";

  const body = () => ({
    name: name.value, description: description.value, cookie_name: cookie.value, enabled: enabled.checked,
    eligible_routes: routes.value.split("\n").map((r) => r.trim()).filter(Boolean),
    variants: variantRows.map((r) => r.value()),
    primary_metric: primary.value.trim(),
    guardrail_metrics: guardrails.value.split(",").map((m) => m.trim()).filter(Boolean),
    planned_sessions: numberOrNull(planned), target_mde: numberOrNull(targetMde), value_cap_percentile: numberOrNull(cap),
    // Not editable here, but a save must not drop it.
    ...(definition.hash_seed !== undefined ? { hash_seed: definition.hash_seed } : {}),
  });
  const submit = async (force) => {
    clearErrors(form);
    confirmArea.replaceChildren();
    outcome.textContent = "Saving…";
    try {
      const { data } = await api(`/api/admin/experiments/${enc(definition.experiment_key)}${force ? "?force=true" : ""}`, {
        method: "PUT", body: body(), headers: { "If-Match": `"${definition.version}"` },
      });
      announce(`Saved version ${data.version}.`);
      await reload();
      const shown = document.getElementById("save-outcome");
      if (shown) shown.textContent = `Saved version ${data.version}.`;
    } catch (exc) {
      if (!(exc instanceof ApiError)) throw exc;
      outcome.textContent = exc.status === 412 ? "Someone else changed this experiment meanwhile; reload the page to see their version." : "Not saved.";
      if (exc.status === 409 && !force) {
        const again = h("button", { type: "button", class: "danger" }, "Save anyway");
        again.addEventListener("click", () => submit(true));
        confirmArea.replaceChildren(h("p", { role: "alert" }, exc.message), again);
        again.focus();
        return;
      }
      showError(form, exc.field, exc.message);
    }
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); submit(false); });
  return h("section", {}, form);
}

function numberOrNull(input) {
  return input.value.trim() === "" ? null : Number(input.value);
}

function variantRow(variant, index) {
  const key = h("input", { type: "text", value: variant.variant_key, "aria-label": `Variant ${index + 1} key`, "data-path": `$.variants[${index}].variant_key` });
  const label = h("input", { type: "text", value: variant.label, "aria-label": `Variant ${index + 1} label`, "data-path": `$.variants[${index}].label` });
  const allocation = h("input", { type: "number", min: 0, max: 100, step: 1, value: variant.allocation, "aria-label": `Variant ${index + 1} allocation`, "data-path": `$.variants[${index}].allocation` });
  const control = h("input", { type: "radio", name: "control", checked: variant.is_control, "aria-label": `Variant ${index + 1} is the control` });
  const row = h("tr", {}, [key, label, allocation, control].map((c) => h("td", {}, c)));
  const value = () => ({ variant_key: key.value, label: label.value, allocation: Number(allocation.value), is_control: control.checked });
  return { row, value };
}

function clearErrors(form) {
  form.querySelectorAll("[data-error-for]").forEach((e) => { e.textContent = ""; });
  form.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
}

// The API names the field by JSON path ("$.variants[1].allocation"); show the message at the
// closest field the form has (that input, else its list), and move focus there.
function showError(form, path, message) {
  let target = null;
  for (let probe = path || ""; probe && !target; probe = probe.replace(/(\.[^.[\]]+|\[\d+\])$/, "") || null) {
    target = form.querySelector(`[data-path="${CSS.escape(probe)}"]`);
    if (probe === "$") break;
  }
  const errorPath = target ? (target.dataset.path.startsWith("$.variants") ? "$.variants" : target.dataset.path) : null;
  const slot = errorPath ? form.querySelector(`[data-error-for="${CSS.escape(errorPath)}"]`) : null;
  (slot || form.querySelector("#save-outcome")).textContent = message;
  if (target) {
    target.setAttribute("aria-invalid", "true");
    (target.matches("input, textarea") ? target : target.querySelector("input") || target).focus();
  }
}

function archiveButton(definition, reload, outcome) {
  const archived = definition.archived;
  const button = h("button", { type: "button", class: archived ? "" : "danger" }, archived ? "Restore" : "Archive");
  button.addEventListener("click", async () => {
    try {
      const path = `/api/admin/experiments/${enc(definition.experiment_key)}${archived ? "/restore" : ""}`;
      await api(path, { method: archived ? "POST" : "DELETE", headers: { "If-Match": `"${definition.version}"` } });
      announce(archived ? "Restored." : "Archived.");
      await reload();
    } catch (exc) {
      outcome.textContent = exc.message;
    }
  });
  return button;
}
