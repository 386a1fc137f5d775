// wsbroker dashboard: login, then four views over the broker's public APIs.
//
// REST (bearer token) for lists and actions; one GraphQL WebSocket
// (graphql-transport-ws at /graphql) for what the broker pushes: the `stats`
// snapshot every second for the whole session, `queueEvents` while the
// queues are shown. What the user sees and may do comes from GET /auth/me;
// the broker still checks every call.

import { ApiError, Session, explain } from "./lib/api.js";
import { $, $$, setText } from "./lib/dom.js";
import { GraphQLSocket, graphqlUrl } from "./lib/graphql-ws.js";
import { Permissions } from "./lib/perms.js";
import { ConsumersView } from "./views/consumers.js";
import { WebhooksView } from "./views/webhooks.js";
import { LogsView } from "./views/logs.js";
import { OverviewView } from "./views/overview.js";
import { QueuesView } from "./views/queues.js";
import { TopicsView } from "./views/topics.js";
import { TokensView } from "./views/tokens.js";

const STATS_INTERVAL_MS = 1000;
const NOTICE_KEY = "wsbroker.dashboard.notice";
const STATS_QUERY = `subscription Stats($intervalMs: Int!) {
  stats(intervalMs: $intervalMs) {
    startTime uptimeSeconds uptimeHuman requestsTotal requestsByStatus
    queuesTotal messagesTotal messagesPending messagesProcessing messagesProcessed messagesFailed
    lastError lastErrorTimestamp
    system {
      processCpuPercent hostCpuPercent cpuCount memoryRssBytes memoryPercent
      hostMemoryTotalBytes hostMemoryPercent diskTotalBytes diskUsedBytes diskPercent
      openConnections openFiles threads
    }
    brokerSpecific {
      version consumers
      storage { backend sizeBytes degraded batches ops failures }
      rates { publishPerS deliverPerS ackPerS nackPerS windowS }
      queues {
        name pending processing processed failed delayed consumers
        publishedTotal deliveredTotal ackedTotal
      }
    }
  }
}`;

const session = new Session();
let app = null;

class App {
  constructor(me) {
    this.session = session;
    this.me = me;
    this.perms = new Permissions(me);
    this.socket = new GraphQLSocket(
      graphqlUrl(),
      () => session.accessToken,
      () => session.refresh(),
      (state) => {
        const live = $("#live");
        live.dataset.state = state;
        setText(live, { live: "live", connecting: "connecting", reconnecting: "reconnecting" }[state] ?? "offline");
      },
    );
    this.views = {
      overview: new OverviewView(this),
      queues: new QueuesView(this),
      consumers: new ConsumersView(this),
      topics: new TopicsView(this),
      webhooks: new WebhooksView(this),
    };
    // GET /logs is for admins only: others don't get the tab at all.
    if (this.perms.admin) this.views.logs = new LogsView(this);
    $('.tabs a[data-view="logs"]').hidden = !this.perms.admin;
    // So are service tokens (GET/POST/DELETE /tokens).
    if (this.perms.admin) this.views.tokens = new TokensView(this);
    $('.tabs a[data-view="tokens"]').hidden = !this.perms.admin;
    this.current = null;
    this.onHash = () => this.route();
    this.subscribeStats();
  }

  subscribeStats() {
    this.stopStats = this.socket.subscribe(STATS_QUERY, { intervalMs: STATS_INTERVAL_MS }, {
      next: (data) => {
        for (const view of Object.values(this.views)) view.onStats?.(data.stats);
      },
      error: (errors) => {
        console.warn("stats subscription refused", errors);
        setTimeout(() => {
          if (app === this) this.subscribeStats();
        }, 5000);
      },
    });
  }

  start() {
    window.addEventListener("hashchange", this.onHash);
    this.route();
  }

  route() {
    const [, name = "overview", ...rest] = location.hash.replace(/^#/, "").split("/");
    const view = this.views[name] ? name : "overview";
    const param = rest.length ? decodeURIComponent(rest.join("/")) : null;
    if (this.current !== view) {
      if (this.current) this.views[this.current].hide();
      for (const section of $$("main .view")) section.hidden = section.id !== `view-${view}`;
      for (const tab of $$(".tabs a")) {
        if (tab.dataset.view === view) tab.setAttribute("aria-current", "page");
        else tab.removeAttribute("aria-current");
      }
      this.current = view;
    }
    this.views[view].show(param);
  }

  stop() {
    window.removeEventListener("hashchange", this.onHash);
    this.socket.close();
    for (const view of Object.values(this.views)) view.destroy?.();
  }
}

function showLogin(message) {
  $("#app").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.hidden = !message;
  setText(error, message ?? "");
  $("#login-password").value = "";
  $("#login-username").focus();
}

async function enter() {
  const me = await session.request("GET", "/auth/me");
  $("#login").hidden = true;
  $("#app").hidden = false;
  setText($("#whoami"), me.admin ? `${me.username} (admin)` : me.username);
  app = new App(me);
  app.start();
}

/** End the session's views and start again from a fresh page (listeners and DOM built for one user). */
function leave(message) {
  if (app) app.stop();
  app = null;
  if (message) sessionStorage.setItem(NOTICE_KEY, message);
  location.hash = "";
  location.reload();
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = event.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await session.login($("#login-username").value, $("#login-password").value);
    await enter();
  } catch (error) {
    const message =
      error instanceof ApiError && error.status === 401 ? "Wrong username or password." : `Cannot log in: ${explain(error)}`;
    showLogin(message);
  } finally {
    button.disabled = false;
  }
});

$("#logout").addEventListener("click", async () => {
  await session.logout();
  leave();
});

session.addEventListener("expired", () => leave("Your session has expired. Log in again."));

// A reload keeps the session of this tab (sessionStorage).
if (session.loggedIn) {
  session.resume();
  enter().catch((error) => {
    session.clear();
    showLogin(error instanceof ApiError && error.status === 401 ? undefined : `Cannot reach the broker: ${explain(error)}`);
  });
} else {
  const notice = sessionStorage.getItem(NOTICE_KEY);
  sessionStorage.removeItem(NOTICE_KEY);
  showLogin(notice ?? undefined);
}
