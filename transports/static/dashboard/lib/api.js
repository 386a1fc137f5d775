// The session: tokens from POST /auth/token, kept in sessionStorage (this tab
// only; never in a URL or a cookie), refreshed before the access token
// expires (POST /auth/refresh rotates the refresh token), revoked on logout.
//
// `request` is the one way the page calls REST: it adds the bearer token,
// refreshes once on a 401 and throws an ApiError carrying the broker's
// {status_code, detail} otherwise.

const STORE_KEY = "wsbroker.dashboard.session";
// Refresh this long before the access token expires (at most a quarter of its life).
const REFRESH_MARGIN_MS = 60_000;

export class ApiError extends Error {
  constructor(status, detail, body = null, retryAfter = null) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

export class Session extends EventTarget {
  constructor() {
    super();
    this.tokens = null;
    this.timer = null;
    this.refreshing = null;
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || "null");
      if (saved && saved.access && saved.refresh) this.tokens = saved;
    } catch {
      this.tokens = null;
    }
    // Timers are throttled in a hidden tab: catch up when it is shown again.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.tokens && this.dueInMs() <= 0) {
        this.refresh().catch(() => {});
      }
    });
  }

  get loggedIn() {
    return this.tokens !== null;
  }

  get accessToken() {
    return this.tokens ? this.tokens.access : null;
  }

  get username() {
    return this.tokens ? this.tokens.username : null;
  }

  dueInMs() {
    const t = this.tokens;
    if (!t) return Infinity;
    const lifetime = t.expiresIn * 1000;
    return t.expiresAt - Math.min(REFRESH_MARGIN_MS, lifetime / 4) - Date.now();
  }

  store(pair, username) {
    this.tokens = {
      access: pair.access_token,
      refresh: pair.refresh_token,
      expiresIn: pair.expires_in,
      expiresAt: Date.now() + pair.expires_in * 1000,
      username,
    };
    sessionStorage.setItem(STORE_KEY, JSON.stringify(this.tokens));
    this.schedule();
  }

  /** Start the refresh timer of a session restored from sessionStorage. */
  resume() {
    if (this.tokens) this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.tokens) return;
    this.timer = setTimeout(() => this.refresh().catch(() => {}), Math.max(0, this.dueInMs()));
  }

  clear() {
    clearTimeout(this.timer);
    this.timer = null;
    this.tokens = null;
    sessionStorage.removeItem(STORE_KEY);
  }

  async login(username, password) {
    const response = await fetch("/auth/token", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username, password }),
      credentials: "omit",
      cache: "no-store",
    });
    const body = await readBody(response);
    if (!response.ok) {
      throw new ApiError(response.status, detailOf(body), body, response.headers.get("retry-after"));
    }
    this.store(body, username);
  }

  /** Rotate the tokens; one refresh at a time. Ends the session when refused. */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.doRefresh().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  async doRefresh() {
    const tokens = this.tokens;
    if (!tokens) throw new ApiError(401, "not logged in");
    let response;
    try {
      response = await fetch("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh_token: tokens.refresh }),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (error) {
      // The broker is unreachable: try again shortly, the tokens may still be good.
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refresh().catch(() => {}), 5000);
      throw error;
    }
    const body = await readBody(response);
    if (response.status === 401 || response.status === 403) {
      this.clear();
      this.dispatchEvent(new CustomEvent("expired", { detail: detailOf(body) }));
      throw new ApiError(response.status, "your session has expired; log in again", body);
    }
    if (!response.ok) {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.refresh().catch(() => {}), 5000);
      throw new ApiError(response.status, detailOf(body), body);
    }
    if (this.tokens === tokens) {
      this.store(body, tokens.username);
      this.dispatchEvent(new Event("refreshed"));
    }
  }

  async logout() {
    const tokens = this.tokens;
    this.clear();
    if (!tokens) return;
    try {
      await fetch("/auth/logout", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Authorization: `Bearer ${tokens.access}`,
        },
        body: JSON.stringify({ refresh_token: tokens.refresh }),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      // Logged out locally anyway; the refresh token expires on its own.
    }
  }

  /**
   * Call a REST route. `query` values that are null, undefined or "" are left out.
   * Returns the decoded JSON body (null for 204).
   */
  async request(method, path, { body, query } = {}) {
    const url = new URL(path, location.origin);
    for (const [key, value] of Object.entries(query ?? {})) {
      if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, String(value));
    }
    for (let attempt = 0; ; attempt += 1) {
      if (this.refreshing) await this.refreshing.catch(() => {});
      if (!this.tokens) throw new ApiError(401, "not logged in");
      const headers = { Accept: "application/json", Authorization: `Bearer ${this.accessToken}` };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      const response = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
      if (response.status === 401 && attempt === 0) {
        await this.refresh();
        continue;
      }
      const data = await readBody(response);
      if (!response.ok) {
        throw new ApiError(response.status, detailOf(data), data, response.headers.get("retry-after"));
      }
      return data;
    }
  }
}

async function readBody(response) {
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function detailOf(body) {
  if (body && typeof body === "object" && body.detail) return String(body.detail);
  if (typeof body === "string" && body) return body;
  return "";
}

/** A one-line explanation of a failed call, for toasts and error lines. */
export function explain(error) {
  if (error instanceof ApiError) {
    if (error.status === 429 && error.retryAfter) return `${error.message} (retry in ${error.retryAfter} s)`;
    if (error.status === 403) return error.message || "you may not do that";
    return error.message || `the broker answered ${error.status}`;
  }
  return `the broker is unreachable (${error && error.message ? error.message : error})`;
}
