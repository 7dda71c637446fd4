// Routing (#/ and #/experiments/KEY), signing in and out, the experiment list and the kill switch.
import { api, ApiError, enc, session } from "./api.js";
import { announce, h, statusBadge } from "./dom.js";
import { experimentPage } from "./experiment.js";

const main = () => document.getElementById("main");

function show(...children) {
  const target = main();
  target.replaceChildren(...children);
  const heading = target.querySelector("h1");
  if (heading) document.title = `${heading.textContent} – Abacus`;
  target.focus();
}

function signInPage(message) {
  const input = h("input", { id: "token", type: "password", name: "token", autocomplete: "off", required: true, "aria-describedby": "token-help token-error" });
  const error = h("span", { id: "token-error", class: "field-error", role: "alert" }, message || "");
  const form = h("form", { "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title" }, "Sign in"),
    h("label", { for: "token" }, "Access token"),
    input,
    h("p", { id: "token-help", class: "notice" }, "An admin or analyst token, e.g. from `abacus token --role analyst --sub you@example.com`. It is kept in this tab only."),
    error,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Sign in")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    session.signIn(input.value.trim());
    try {
      await api("/api/v1/settings");
      location.hash = "#/";
      render();
    } catch (exc) {
      session.signOut();
      error.textContent = exc instanceof ApiError && exc.status === 401 ? `The token was refused: ${exc.message}` : exc.message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });
  show(h("section", {}, form));
  input.focus();
}

async function listPage() {
  const [{ data: experiments }, { data: settings }] = await Promise.all([
    api("/api/v1/experiments?include_archived=true"),
    api("/api/v1/settings"),
  ]);
  const rows = experiments.map((e) => h("tr", {},
    h("th", { scope: "row" }, h("a", { href: `#/experiments/${enc(e.experiment_key)}` }, e.experiment_key)),
    h("td", { class: "left" }, e.name),
    h("td", { class: "left" }, statusBadge(e, settings.experiments_enabled)),
    h("td", {}, e.version),
    h("td", { class: "left" }, `${e.updated_at.slice(0, 16).replace("T", " ")} by ${e.updated_by}`)));
  const table = h("table", {},
    h("caption", {}, `${experiments.length} experiments, archived ones included`),
    h("thead", {}, h("tr", {}, ...["Key", "Name", "Status", "Version", "Last change"].map((c, i) => h("th", { scope: "col", class: i < 3 || i === 4 ? "left" : "" }, c)))),
    h("tbody", {}, rows));
  show(h("h1", {}, "Experiments"), killSwitch(settings), h("section", { "aria-label": "Experiment list" }, table));
}

function killSwitch(settings) {
  const on = settings.experiments_enabled;
  const state = h("p", { id: "kill-switch-state" }, on ? "Experiments are running on the site." : "The kill switch is on: the site shows no experiment and beacons are dropped.");
  const section = h("section", { "aria-labelledby": "kill-switch-title" }, h("h2", { id: "kill-switch-title" }, "Kill switch"), state);
  if (session.isAdmin()) {
    const button = h("button", { type: "button", class: on ? "danger" : "primary", "aria-describedby": "kill-switch-state" },
      on ? "Turn all experiments off" : "Turn experiments back on");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("/api/admin/settings", { method: "PUT", body: { experiments_enabled: !on } });
        announce(on ? "All experiments are off." : "Experiments are back on.");
        await listPage();
      } catch (exc) {
        button.disabled = false;
        state.textContent = exc.message;
      }
    });
    section.append(button);
  }
  return section;
}

export async function render() {
  const claims = session.claims();
  const who = document.getElementById("who");
  const signOut = document.getElementById("sign-out");
  if (!session.token()) {
    who.textContent = "";
    signOut.hidden = true;
    return signInPage();
  }
  who.textContent = claims ? `${claims.sub} (${claims.role}${claims.role === "admin" ? "" : ", read-only"})` : "";
  signOut.hidden = false;
  const match = location.hash.match(/^#\/experiments\/([^/]+)$/);
  try {
    if (match) await experimentPage(decodeURIComponent(match[1]), show);
    else await listPage();
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) {
      session.signOut();
      return signInPage("Your token has expired or was refused; sign in again.");
    }
    show(h("h1", {}, "Something went wrong"), h("p", { role: "alert" }, exc.message));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", () => {
    session.signOut();
    location.hash = "#/";
    render();
  });
  window.addEventListener("hashchange", render);
  render();
});
