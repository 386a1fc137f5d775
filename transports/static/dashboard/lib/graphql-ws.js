// A small client of the graphql-transport-ws protocol (the `graphql-ws`
// library's protocol: connection_init/ack, subscribe, next, error, complete,
// ping/pong) over one WebSocket to /graphql.
//
// The broker authenticates the connection from connection_init's payload
// {"token": access token}. The socket opens with the first subscription and
// closes after the last one ends; a dropped connection reconnects with
// backoff and subscribes again, and a refused one (close 4403) refreshes the
// session's token first.

const PROTOCOL = "graphql-transport-ws";
const MAX_BACKOFF_MS = 15_000;

export class GraphQLSocket {
  /**
   * @param {string} url ws(s)://host/graphql
   * @param {() => string|null} token the current access token
   * @param {() => Promise<void>} reauthenticate refreshes the token after a refusal
   * @param {(state: string) => void} onState "connecting" | "live" | "reconnecting" | "idle"
   */
  constructor(url, token, reauthenticate, onState) {
    this.url = url;
    this.token = token;
    this.reauthenticate = reauthenticate;
    this.onState = onState;
    this.subs = new Map();
    this.ws = null;
    this.acked = false;
    this.nextId = 1;
    this.failures = 0;
    this.timer = null;
    this.closed = false;
  }

  /**
   * Start a subscription; returns a function that ends it.
   * sink.next(data) gets each result's data; sink.error(errors) a refusal
   * (the subscription is over then).
   */
  subscribe(query, variables, sink) {
    const id = String(this.nextId++);
    const sub = { id, query, variables, sink };
    this.subs.set(id, sub);
    if (this.acked) this.sendSubscribe(sub);
    else this.connect();
    return () => {
      if (!this.subs.delete(id)) return;
      if (this.acked) this.send({ id, type: "complete" });
      if (this.subs.size === 0) this.disconnect();
    };
  }

  /** End every subscription and the connection, for good (logout). */
  close() {
    this.closed = true;
    this.subs.clear();
    this.disconnect();
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  sendSubscribe(sub) {
    this.send({ id: sub.id, type: "subscribe", payload: { query: sub.query, variables: sub.variables } });
  }

  state(value) {
    this.onState?.(value);
  }

  disconnect() {
    clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    this.acked = false;
    if (ws) ws.close(1000, "done");
    this.state("idle");
  }

  connect() {
    if (this.ws || this.closed || this.timer !== null) return;
    const ws = new WebSocket(this.url, PROTOCOL);
    this.ws = ws;
    this.acked = false;
    this.state(this.failures ? "reconnecting" : "connecting");
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "connection_init", payload: { token: this.token() } }));
    });
    ws.addEventListener("message", (event) => this.receive(ws, event));
    ws.addEventListener("close", (event) => this.closedWith(ws, event));
  }

  receive(ws, event) {
    if (ws !== this.ws) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    const sub = message.id === undefined ? null : this.subs.get(message.id);
    switch (message.type) {
      case "connection_ack":
        this.acked = true;
        this.failures = 0;
        this.state("live");
        for (const each of this.subs.values()) this.sendSubscribe(each);
        break;
      case "next":
        if (!sub) break;
        if (message.payload?.errors?.length) {
          this.subs.delete(message.id);
          this.send({ id: message.id, type: "complete" });
          sub.sink.error?.(message.payload.errors);
        } else {
          sub.sink.next(message.payload?.data);
        }
        break;
      case "error":
        if (!sub) break;
        this.subs.delete(message.id);
        sub.sink.error?.(message.payload);
        break;
      case "complete":
        if (!sub) break;
        this.subs.delete(message.id);
        sub.sink.complete?.();
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      default:
        break;
    }
  }

  async closedWith(ws, event) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.acked = false;
    if (this.closed || this.subs.size === 0) {
      this.state("idle");
      return;
    }
    this.failures += 1;
    this.state("reconnecting");
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures - 1, 5));
    this.timer = setTimeout(async () => {
      // 4403: the broker refused the token (expired while we were away).
      if (event.code === 4403 || event.code === 4401) {
        try {
          await this.reauthenticate();
        } catch {
          // The session is over; its owner closes this socket.
        }
      }
      this.timer = null;
      this.connect();
    }, delay);
  }
}

/** The /graphql WebSocket URL of the page's own origin. */
export function graphqlUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/graphql`;
}
