// The API client of the dashboard: the token lives in sessionStorage (gone with the tab, never
// in a URL), every call sends it as a bearer token, and an error answer becomes an ApiError
// carrying the API's message and the JSON path of the offending field.
const TOKEN_KEY = "abacus.token";

export const session = {
  token: () => sessionStorage.getItem(TOKEN_KEY),
  signIn: (token) => sessionStorage.setItem(TOKEN_KEY, token),
  signOut: () => sessionStorage.removeItem(TOKEN_KEY),
  // Read for display only: the API verifies the token on every call.
  claims() {
    const token = this.token();
    if (!token) return null;
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
    } catch {
      return null;
    }
  },
  isAdmin() {
    const claims = this.claims();
    return Boolean(claims && claims.role === "admin");
  },
};

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `The API answered ${status}`);
    this.status = status;
    this.field = (body && body.field) || null;
  }
}

export async function api(path, { method = "GET", body, headers = {} } = {}) {
  const sent = { ...headers, Authorization: `Bearer ${session.token()}` };
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers: sent, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, headers: response.headers };
}

export const enc = encodeURIComponent;
