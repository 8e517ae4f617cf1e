// Switchboard browser client: a reconnecting WebSocket with jittered backoff, a bounded outgoing
// queue, heartbeat answers, the first-message auth flow, and resuming a channel from the last
// offset it saw. No dependencies; an ES module.
//
//   import { SwitchboardClient } from "/static/switchboard.js";
//   const client = new SwitchboardClient({ url: () => `wss://host/ws/room/lobby?token=${token}` });
//   client.addEventListener("message", (e) => console.log(e.detail));
//   client.connect();
//   client.send({ content: "hello" });
//
// Events (all CustomEvent, data in `detail`):
//   state         {state}   "connecting" | "open" | "reconnecting" | "closed"
//   open          {attempt}
//   message       the parsed JSON frame (or the raw string when it is not JSON)
//   recovered     {ok, count | reason, offset, epoch}  after a resume; ok:false means resync
//   close         {code, reason, terminal, willReconnect}
//   reconnecting  {delay, attempt}   before each retry; delay in ms
//   dropped       {message}          the outgoing queue was full: the oldest message was dropped
//   error         {error}

/**
 * Close codes after which retrying with the same credentials cannot help, so the client stops:
 * 1003 and 1008 (the server refused this client or its token), 4003 (the server API's
 * `disconnect`, e.g. "account suspended") and 4004 (the user's connection limit). Any other 4xxx
 * code is one a `disconnect` chose: terminal too (see isTerminal).
 */
export const TERMINAL_CODES = Object.freeze([1003, 1008, 4003, 4004]);

/** Server codes about this one connection, which a reconnect fixes: slow consumer, no pong, token expired. */
export const TRANSIENT_SERVER_CODES = Object.freeze([4000, 4001, 4002]);

/**
 * Whether a close with this code ends the client instead of starting a reconnect.
 * @param {number} code
 * @returns {boolean}
 */
export function isTerminal(code) {
  return TERMINAL_CODES.includes(code) || (code >= 4000 && code <= 4999 && !TRANSIENT_SERVER_CODES.includes(code));
}

/**
 * Full-jitter exponential backoff: a uniformly random delay in [0, min(cap, base * 2^attempt)).
 * Jitter spreads a fleet of clients out after a deploy instead of returning them all at once.
 * @param {number} attempt  0 for the first retry
 * @param {number} base     ms
 * @param {number} cap      ms
 * @param {() => number} [random]
 * @returns {number} ms
 */
export function backoffDelay(attempt, base, cap, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}

/**
 * A FIFO queue with a fixed bound: pushing onto a full queue drops (and returns) the oldest item.
 * @template T
 */
export class BoundedQueue {
  /** @param {number} limit */
  constructor(limit) {
    if (!(limit > 0)) throw new RangeError("limit must be positive");
    this.limit = limit;
    /** @type {T[]} */
    this.items = [];
  }

  /** @param {T} item @returns {T | undefined} the dropped item, if any */
  push(item) {
    this.items.push(item);
    return this.items.length > this.limit ? this.items.shift() : undefined;
  }

  /** @returns {T[]} every item, oldest first, leaving the queue empty */
  drain() {
    const items = this.items;
    this.items = [];
    return items;
  }

  get size() {
    return this.items.length;
  }
}

/**
 * @typedef {object} ClientOptions
 * @property {string | (() => string | Promise<string>)} url  called before every (re)connect, so a
 *   fresh token or another server can be chosen
 * @property {() => string | Promise<string>} [getToken]  first-message auth (/ws/auth-first, or
 *   ?auth=first on a channel endpoint): called before every connect, so an expired token can be
 *   refreshed; the resume position then travels in the auth message
 * @property {number} [baseDelay=500]  ms
 * @property {number} [maxDelay=15000]  ms
 * @property {number} [maxRetries=Infinity]
 * @property {number} [queueLimit=100]  outgoing messages kept while disconnected
 * @property {number} [deadAfter=0]  ms without any frame before the socket is considered dead
 *   (0: never; use about 2x the server's heartbeat interval on /ws/with-heartbeat)
 * @property {boolean} [resume=true]  reconnect with ?since=&epoch= of the last channel frame, so the
 *   server sends what was missed (then a `recovered` event)
 * @property {{offset: number, epoch: string} | null} [position]  a saved position to resume from
 * @property {typeof WebSocket} [WebSocketImpl]
 */

/**
 * `url` with its since/epoch query parameters set to `position`.
 * @param {string} url
 * @param {{offset: number, epoch: string}} position
 */
export function withPosition(url, position) {
  const parsed = new URL(url, globalThis.location?.href);
  parsed.searchParams.set("since", String(position.offset));
  parsed.searchParams.set("epoch", position.epoch);
  return parsed.toString();
}

/**
 * What both clients share: the state machine, full-jitter retries and terminal close codes.
 * Subclasses implement onOpen(socket), onFrame(socket, data), onClose(socket, code, reason) and
 * stopTimers(), may refine socketUrl(), and call closed(code, reason) when their socket closes.
 */
class Reconnecting extends EventTarget {
  constructor(options) {
    super();
    this.options = { baseDelay: 500, maxDelay: 15000, maxRetries: Infinity, queueLimit: 100, ...options };
    this.state = "closed";
    this.attempt = 0;
    this.connections = 0;
    this.stopped = false;
    this.retryTimer = 0;
  }

  /** The URL of the next connection: options.url, called if it is a function. */
  async socketUrl() {
    return typeof this.options.url === "function" ? await this.options.url() : this.options.url;
  }

  async open() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let url;
    try {
      url = await this.socketUrl();
    } catch (error) {
      this.emit("error", { error });
      this.retry();
      return;
    }
    const socket = new (this.options.WebSocketImpl || WebSocket)(url);
    this.socket = socket;
    this.ready = false;
    this.connections += 1;
    socket.onopen = () => this.onOpen(socket);
    socket.onmessage = (event) => this.onFrame(socket, event.data);
    socket.onerror = () => this.emit("error", { error: new Error("WebSocket error") });
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
  }

  /** Start connecting; reconnects by itself until close() or a terminal close code. */
  connect() {
    this.stopped = false;
    this.open();
  }

  /** Stop for good: closes the socket with 1000 and cancels any pending retry. */
  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.stopTimers();
    if (this.socket) this.socket.close(1000, "client closed");
    this.setState("closed");
  }

  /** After a close: emit `close`, then retry (with backoff) unless stopped or refused for good. */
  closed(code, reason) {
    const terminal = isTerminal(code);
    const willReconnect = !this.stopped && !terminal && this.attempt < this.options.maxRetries;
    this.emit("close", { code, reason, terminal, willReconnect });
    if (willReconnect) this.retry();
    else this.setState("closed");
  }

  retry() {
    if (this.stopped || this.attempt >= this.options.maxRetries) {
      this.setState("closed");
      return;
    }
    const delay = backoffDelay(this.attempt, this.options.baseDelay, this.options.maxDelay);
    this.attempt += 1;
    this.setState("reconnecting");
    this.emit("reconnecting", { delay, attempt: this.attempt });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit("state", { state });
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export class SwitchboardClient extends Reconnecting {
  /** @param {ClientOptions} options */
  constructor(options) {
    super({ deadAfter: 0, resume: true, ...options });
    /** The offset and epoch of the last channel frame: where a reconnect resumes. */
    this.position = this.options.position || null;
    this.queue = new BoundedQueue(this.options.queueLimit);
    /** @type {WebSocket | null} */
    this.socket = null;
    this.ready = false;
    this.deadTimer = 0;
  }

  stopTimers() {
    clearTimeout(this.deadTimer);
  }

  /**
   * Send now if connected, else queue (bounded) until the next connection is ready.
   * @param {unknown} message  objects are sent as JSON
   */
  send(message) {
    const text = typeof message === "string" ? message : JSON.stringify(message);
    if (this.ready && this.socket && this.socket.readyState === 1) {
      this.socket.send(text);
      return;
    }
    const dropped = this.queue.push(text);
    if (dropped !== undefined) this.emit("dropped", { message: dropped });
  }

  async socketUrl() {
    const url = await super.socketUrl();
    // With first-message auth the position travels in the auth message instead.
    return this.options.resume && this.position && !this.options.getToken ? withPosition(url, this.position) : url;
  }

  onOpen() {
    this.watchdog();
    if (!this.options.getToken) this.onReady();
  }

  async onFrame(socket, data) {
    if (socket !== this.socket) return;
    this.watchdog();
    let frame = data;
    try {
      frame = JSON.parse(data);
    } catch {
      // not JSON: hand it over as it came
    }
    if (frame && typeof frame === "object") {
      if (frame.type === "ping") {
        socket.send('{"type":"pong"}');
        return;
      }
      if (!this.ready && this.options.getToken) {
        if (frame.type === "auth_required") {
          try {
            const auth = { type: "auth", token: await this.options.getToken() };
            if (this.options.resume && this.position) Object.assign(auth, { since: this.position.offset, epoch: this.position.epoch });
            socket.send(JSON.stringify(auth));
          } catch (error) {
            this.emit("error", { error });
            socket.close(1000, "no token");
          }
          return;
        }
        if (frame.type === "auth_success") this.onReady();
      }
      if (typeof frame.offset === "number" && typeof frame.epoch === "string") {
        this.position = { offset: frame.offset, epoch: frame.epoch };
      }
      if (frame.type === "recovered") this.emit("recovered", frame);
    }
    this.emit("message", frame);
  }

  onReady() {
    this.ready = true;
    this.attempt = 0;
    this.setState("open");
    this.emit("open", { attempt: this.connections });
    for (const text of this.queue.drain()) this.socket.send(text);
  }

  onClose(socket, code, reason) {
    if (socket !== this.socket) return;
    clearTimeout(this.deadTimer);
    this.ready = false;
    this.closed(code, reason);
  }

  /** A socket that goes quiet for deadAfter ms is treated as dead: close it and reconnect. */
  watchdog() {
    if (!this.options.deadAfter) return;
    clearTimeout(this.deadTimer);
    const socket = this.socket;
    this.deadTimer = setTimeout(() => {
      if (socket === this.socket) socket.close(4001, "no frames: connection presumed dead"); // 4001: not terminal
    }, this.options.deadAfter);
  }

}

// ---------------------------------------------------------------------------------------------
// The /ws protocol (docs/protocol.md): many channels on one socket.
//
//   import { Switchboard } from "/static/switchboard.js";
//   const sb = new Switchboard({ url: "/ws", getToken: () => fetchToken() });
//   sb.connect();
//   const room = sb.subscribe("room:lobby", { publication: (pub) => show(pub.data) });
//   const offset = await sb.publish("room:lobby", "hello");
//   room.unsubscribe();
//
// Subscription handlers (all optional): publication(pub), join(info), leave(info),
// subscribed(reply), recovered({ok, count | reason, offset, epoch}), unsubscribed({code, reason}),
// error(error).
// Where WebSockets do not get through, it falls back by itself to /sse for reading and
// POST /command for commands, each channel resumed from its own offset (docs/client.md).
// Client events: state, open ({transport}), transport ({transport}: "sse" on the switch), close,
// reconnecting, message ({data} sent to this user), error,
// sub ({channel, subscription}: the server subscribed this user; set subscription.handlers),
// unsub ({channel, code, reason}).

/** An error reply from the server: `code` is from the protocol's table (103 permission denied...). */
export class CommandError extends Error {
  /** @param {number} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/**
 * A publication as a subscription's `publication` handler gets it (docs/protocol.md).
 * @typedef {object} Publication
 * @property {"pub"} op
 * @property {string} channel
 * @property {unknown} data
 * @property {number} offset  0 on a channel without history
 * @property {string} epoch
 * @property {{client: string, user: string, info?: unknown} | undefined} [info]  the publisher
 */

/**
 * What a subscription calls, all optional.
 * @typedef {object} SubscriptionHandlers
 * @property {(pub: Publication, sub: Subscription) => void} [publication]
 * @property {(info: unknown, sub: Subscription) => void} [join]
 * @property {(info: unknown, sub: Subscription) => void} [leave]
 * @property {(reply: Record<string, unknown>, sub: Subscription) => void} [subscribed]
 * @property {(detail: {ok: boolean, count?: number, reason?: string, offset: number, epoch: string}, sub: Subscription) => void} [recovered]
 * @property {(detail: {code: number, reason: string}, sub: Subscription) => void} [unsubscribed]
 * @property {(error: CommandError, sub: Subscription) => void} [error]
 */

/** One channel on a Switchboard connection; resumed from its own position after reconnects. */
export class Subscription {
  /** @param {Switchboard} client @param {string} channel @param {SubscriptionHandlers} [handlers] */
  constructor(client, channel, handlers) {
    this.client = client;
    this.channel = channel;
    /** @type {SubscriptionHandlers} */
    this.handlers = handlers || {};
    /** @type {{offset: number, epoch: string} | null} */
    this.position = null;
    this.state = "subscribing"; // "subscribing" | "subscribed" | "unsubscribed"
  }

  /**
   * Leave the channel: no publication of it reaches the handlers afterwards.
   * @returns {Promise<unknown>}
   */
  unsubscribe() {
    if (this.state === "unsubscribed") return Promise.resolve();
    this.state = "unsubscribed";
    this.client.subscriptions.delete(this.channel);
    return this.client.leave(this.channel);
  }

  /** @param {keyof SubscriptionHandlers} name @param {any} detail */
  call(name, detail) {
    const handler = this.handlers[name];
    if (handler) {
      try {
        handler(detail, this);
      } catch (error) {
        console.error(error);
      }
    }
  }

  /** @param {number} offset @param {string} epoch */
  moveTo(offset, epoch) {
    if (offset) this.position = { offset, epoch };
  }
}

/**
 * @typedef {object} SwitchboardOptions
 * @property {string | (() => string | Promise<string>)} [url="/ws"]  relative URLs resolve against the page
 * @property {() => string | null | Promise<string | null>} [getToken]  called before every connect and
 *   before the token expires (then sent as `refresh`); the token never goes in the URL
 * @property {number} [baseDelay=500]  ms
 * @property {number} [maxDelay=15000]  ms
 * @property {number} [maxRetries=Infinity]
 * @property {number} [queueLimit=100]  commands kept while disconnected; the oldest is rejected beyond
 * @property {number} [replyTimeout=10000]  ms to wait for a command's reply
 * @property {boolean} [fallback=true]  fall back to SSE (reading) and HTTP (commands) when
 *   WebSockets do not get through: after `fallbackAfter` WebSocket attempts in a row that never
 *   got a `connect` reply. The client then stays on SSE until `connect()` is called again.
 * @property {number} [fallbackAfter=2]
 * @property {string} [sseUrl]  default: `url` with its last path segment `ws` made `sse`, http(s)
 * @property {string} [commandUrl]  default: likewise, `command`
 * @property {typeof WebSocket} [WebSocketImpl]
 * @property {typeof EventSource} [EventSourceImpl]  default: globalThis.EventSource (no fallback without one)
 */

export class Switchboard extends Reconnecting {
  /** @param {SwitchboardOptions} [options] */
  constructor(options = {}) {
    super({ url: "/ws", replyTimeout: 10000, fallback: true, fallbackAfter: 2, ...options });
    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this.queue = new BoundedQueue(this.options.queueLimit);
    this.waiting = new Map();
    this.socket = null;
    this.ready = false;
    this.nextId = 0;
    this.client = null; // this connection's id, from the connect reply
    this.timers = { refresh: 0, dead: 0 };
    /** "websocket", or "sse" once fallen back: pushes over /sse, commands over POST /command. */
    this.transport = "websocket";
    this.failedUpgrades = 0; // WebSocket attempts in a row that never got a connect reply
    /** @type {EventSource | null} */
    this.stream = null;
    this.streams = 0; // bumped by each stream started or ended: a slower start gives way
    this.token = null; // the token the stream and the HTTP commands carry
  }

  stopTimers() {
    Object.values(this.timers).forEach(clearTimeout);
  }

  /** Start connecting, over WebSocket first whatever an earlier connect fell back to. */
  connect() {
    this.transport = "websocket";
    this.failedUpgrades = 0;
    super.connect();
  }

  close() {
    this.endStream();
    super.close();
  }

  async open() {
    if (this.transport === "sse") return this.openStream();
    return super.open();
  }

  /** Leave a channel on the server: `unsubscribe` over WebSocket, a narrower stream over SSE. */
  leave(channel) {
    if (!this.ready) return Promise.resolve();
    if (this.transport === "sse") {
      this.reopenStream();
      return Promise.resolve();
    }
    return this.command("unsubscribe", { channel }).catch(() => {});
  }

  /**
   * Subscribe now, or as soon as connected; every reconnect resumes from the last offset seen.
   * @param {string} channel
   * @param {SubscriptionHandlers} [handlers]
   * @returns {Subscription}
   */
  subscribe(channel, handlers) {
    const existing = this.subscriptions.get(channel);
    if (existing) return existing;
    const sub = new Subscription(this, channel, handlers);
    this.subscriptions.set(channel, sub);
    if (this.ready) {
      if (this.transport === "sse") this.reopenStream();
      else this.sendSubscribe(sub);
    }
    return sub;
  }

  /**
   * Publish; resolves with the offset once the server has stored it (0 without history).
   * @param {string} channel
   * @param {unknown} data
   * @returns {Promise<number>}
   */
  async publish(channel, data) {
    return (await this.command("publish", { channel, data })).offset;
  }

  /**
   * `{clients, users}` across the cluster, for a channel this client is subscribed to.
   * @param {string} channel
   * @returns {Promise<Record<string, any>>}
   */
  presenceStats(channel) {
    return this.command("presence_stats", { channel });
  }

  /**
   * A page of the channel's history: `{publications, offset, epoch}`.
   * @param {string} channel
   * @param {{since?: number, epoch?: string, limit?: number}} [fields]
   * @returns {Promise<Record<string, any>>}
   */
  history(channel, fields = {}) {
    return this.command("history", { channel, ...fields });
  }

  /**
   * Ask your backend through the server (its rpc proxy or on_rpc hook, docs/proxies.md); resolves
   * with the answer's `data`, rejects with a CommandError (104 when nothing takes the method).
   * @param {string} method
   * @param {any} [data]
   * @returns {Promise<any>}
   */
  async rpc(method, data = null) {
    return (await this.command("rpc", { method, data })).data;
  }

  /**
   * Send a command once connected; resolves with the ok reply, rejects with a CommandError.
   * @param {string} op
   * @param {Record<string, unknown>} [fields]
   * @returns {Promise<Record<string, any>>}
   */
  command(op, fields = {}) {
    return new Promise((resolve, reject) => {
      const item = { op, fields, resolve, reject };
      if (this.ready) this.send(item);
      else {
        const dropped = this.queue.push(item);
        if (dropped) dropped.reject(new Error("dropped: too many commands while disconnected"));
      }
    });
  }

  send(item) {
    if (this.transport === "sse") {
      this.sendOverHttp(item);
      return;
    }
    const { op, fields, resolve, reject } = item;
    const id = ++this.nextId;
    const timer = setTimeout(() => {
      if (this.waiting.delete(id)) reject(new Error(`${op}: no reply in time`));
    }, this.options.replyTimeout);
    this.waiting.set(id, { resolve, reject, timer });
    this.socket.send(JSON.stringify({ id, op, ...fields }));
  }

  sendSubscribe(sub) {
    const fields = { channel: sub.channel };
    if (sub.position) Object.assign(fields, { since: sub.position.offset, epoch: sub.position.epoch });
    new Promise((resolve, reject) => this.send({ op: "subscribe", fields, resolve, reject })).then(
      (reply) => this.onSubscribed(sub, reply),
      (error) => {
        if (!(error instanceof CommandError)) return; // the connection dropped: the next one resubscribes
        this.onRefused(sub, error);
      },
    );
  }

  /** A subscribe's ok reply (WebSocket) or `subscribed` push (SSE): in, at this position. */
  onSubscribed(sub, reply) {
    if (sub.state === "unsubscribed") return;
    sub.state = "subscribed";
    sub.moveTo(reply.offset, reply.epoch);
    sub.call("subscribed", reply);
    if ("recovered" in reply) sub.call("recovered", { ok: reply.recovered, count: reply.count, reason: reply.reason, offset: reply.offset, epoch: reply.epoch });
  }

  onRefused(sub, error) {
    this.subscriptions.delete(sub.channel);
    sub.state = "unsubscribed";
    sub.call("error", error);
  }

  /** Relative URLs (the default "/ws") resolve against the page, http(s) becoming ws(s). */
  async socketUrl() {
    const url = new URL(await super.socketUrl(), globalThis.location?.href);
    if (url.protocol === "http:" || url.protocol === "https:") url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    return url.toString();
  }

  async onOpen(socket) {
    let token = null;
    try {
      token = this.options.getToken ? await this.options.getToken() : null;
    } catch (error) {
      this.emit("error", { error });
    }
    if (socket !== this.socket) return;
    new Promise((resolve, reject) => this.send({ op: "connect", fields: token ? { token } : {}, resolve, reject })).then(
      (reply) => this.onConnected(socket, reply),
      (error) => this.emit("error", { error }), // the server closes with 1008 after a refused connect
    );
  }

  onConnected(socket, reply) {
    if (socket !== this.socket) return;
    this.failedUpgrades = 0;
    this.ready = true;
    this.attempt = 0;
    this.client = reply.client;
    this.pingSeconds = reply.ping;
    this.watchdog();
    this.scheduleRefresh(reply.expires);
    this.setState("open");
    this.emit("open", { attempt: this.connections, client: reply.client, user: reply.user, transport: "websocket" });
    for (const sub of this.subscriptions.values()) this.sendSubscribe(sub);
    for (const item of this.queue.drain()) this.send(item);
  }

  onFrame(socket, data) {
    if (socket !== this.socket) return;
    this.watchdog();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof frame.id === "number") {
      const waiter = this.waiting.get(frame.id);
      if (!waiter) return;
      this.waiting.delete(frame.id);
      clearTimeout(waiter.timer);
      if (frame.ok) waiter.resolve(frame);
      else waiter.reject(new CommandError(frame.error.code, frame.error.message));
      return;
    }
    if (frame.op === "ping") socket.send('{"op":"pong"}');
    else this.onPush(frame);
  }

  /** A push, from the socket or the stream (they carry the same ones, docs/protocol.md). */
  onPush(frame) {
    const sub = frame.channel !== undefined ? this.subscriptions.get(frame.channel) : undefined;
    switch (frame.op) {
      case "pub":
        if (!sub) break;
        sub.moveTo(frame.offset, frame.epoch);
        sub.call("publication", frame);
        break;
      case "join":
      case "leave":
        if (sub) sub.call(frame.op, frame.info);
        break;
      case "recovered":
        if (!sub) break;
        sub.moveTo(frame.offset, frame.epoch);
        sub.call("recovered", frame);
        break;
      case "sub": {
        // The server API subscribed this user: route its publications; resumed on reconnects.
        const known = sub || new Subscription(this, frame.channel, {});
        this.subscriptions.set(frame.channel, known);
        known.state = "subscribed";
        known.moveTo(frame.offset, frame.epoch);
        this.emit("sub", { channel: frame.channel, subscription: known });
        break;
      }
      case "unsub":
        if (!sub) break;
        this.subscriptions.delete(frame.channel);
        sub.state = "unsubscribed";
        sub.call("unsubscribed", { code: frame.code, reason: frame.reason });
        this.emit("unsub", { channel: frame.channel, code: frame.code, reason: frame.reason });
        break;
      case "message":
        this.emit("message", { data: frame.data });
        break;
    }
  }

  onClose(socket, code, reason) {
    if (socket !== this.socket) return;
    clearTimeout(this.timers.dead);
    clearTimeout(this.timers.refresh);
    if (!this.ready) this.upgradeFailed();
    this.ready = false;
    for (const [id, waiter] of this.waiting) {
      clearTimeout(waiter.timer);
      waiter.reject(new Error("connection lost before the reply"));
      this.waiting.delete(id);
    }
    for (const sub of this.subscriptions.values()) if (sub.state === "subscribed") sub.state = "subscribing";
    this.closed(code, reason);
  }

  /** The server pings every `ping` seconds: a socket silent for much longer than that is dead. */
  watchdog() {
    if (!this.pingSeconds) return;
    clearTimeout(this.timers.dead);
    const socket = this.socket;
    this.timers.dead = setTimeout(() => {
      if (socket === this.socket) socket.close(4001, "no frames: connection presumed dead"); // 4001: not terminal
    }, this.pingSeconds * 2000 + 5000);
  }

  /** Ask getToken for a fresh token before this one expires, and send it as `refresh`. */
  scheduleRefresh(expires) {
    clearTimeout(this.timers.refresh);
    if (!expires || !this.options.getToken) return;
    const left = expires * 1000 - Date.now();
    const delay = Math.max(500, left - Math.min(30000, left * 0.2));
    this.timers.refresh = setTimeout(async () => {
      try {
        const reply = await this.command("refresh", { token: await this.options.getToken() });
        this.scheduleRefresh(reply.expires);
      } catch (error) {
        this.emit("error", { error }); // the server closes with 4002 later; the reconnect gets a fresh token
      }
    }, delay);
  }

  // -- the fallback: pushes over /sse, commands over POST /command (docs/client.md) --------------

  /** A WebSocket that closed before its connect reply; enough in a row switch to SSE. */
  upgradeFailed() {
    this.failedUpgrades += 1;
    const EventSourceImpl = this.options.EventSourceImpl || globalThis.EventSource;
    if (!this.options.fallback || !EventSourceImpl || this.failedUpgrades < this.options.fallbackAfter) return;
    this.transport = "sse";
    this.emit("transport", { transport: "sse", failedUpgrades: this.failedUpgrades });
  }

  /** `url`'s host, http(s), with its last path segment made `name` (or options[name + "Url"]). */
  async httpUrl(name) {
    const given = this.options[`${name}Url`];
    const url = new URL(given || (await Reconnecting.prototype.socketUrl.call(this)), globalThis.location?.href);
    if (url.protocol === "ws:" || url.protocol === "wss:") url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    if (!given) {
      url.pathname = url.pathname.replace(/[^/]*$/, name);
      url.search = "";
    }
    return url;
  }

  /** The stream of every channel, each resumed from its own position (the cursor, wires.py). */
  async streamUrl() {
    const url = await this.httpUrl("sse");
    const subs = [...this.subscriptions.values()];
    for (const sub of subs) url.searchParams.append("channel", sub.channel);
    if (subs.some((sub) => sub.position)) {
      url.searchParams.set("cursor", subs.map((s) => (s.position ? `${s.position.offset}.${s.position.epoch}` : "-")).join(","));
    }
    if (this.token) url.searchParams.set("token", this.token); // EventSource cannot set headers
    return url.toString();
  }

  async openStream() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    try {
      this.token = this.options.getToken ? await this.options.getToken() : null;
    } catch (error) {
      this.emit("error", { error });
      this.token = null;
    }
    if (this.stopped) return;
    this.connections += 1;
    if (this.subscriptions.size) await this.startStream();
    else this.onStreamOpen(null); // nothing to read yet: commands work, a subscribe opens a stream
  }

  async startStream() {
    const generation = ++this.streams;
    let url;
    try {
      url = await this.streamUrl();
    } catch (error) {
      this.emit("error", { error });
      this.retry();
      return;
    }
    // Stopped, or another start or end came meanwhile (two subscribes in a row): that one stands.
    if (this.stopped || generation !== this.streams) return;
    const stream = new (this.options.EventSourceImpl || EventSource)(url);
    this.stream = stream;
    let started = false;
    stream.onopen = () => {
      started = true;
      if (stream === this.stream && !this.ready) this.onStreamOpen(stream);
    };
    stream.onmessage = (event) => {
      if (stream === this.stream) this.onStreamEvent(stream, event.data);
    };
    // Not EventSource's own retry: a fresh token and each channel's position, with backoff.
    stream.onerror = async () => {
      if (stream !== this.stream) return;
      stream.close();
      // EventSource hides a refusal's status: ask once more to tell a refusal from a lost stream.
      const refused = started ? null : await this.refusal(url);
      if (stream === this.stream) this.onStreamEnd(...(refused || [1006, "stream lost"]));
    };
  }

  /**
   * Why the stream at `url` is refused, as the close code a WebSocket would have got: 1008 for
   * a bad token or a channel refused (101, 102, 103), 4004 over the user's connection limit
   * (106), 4002 for an expired token (109: reconnect with a fresh one); null when it is not
   * refused (it opens now: it is closed at once), or for a refusal worth retrying (503).
   * @param {string} url
   * @returns {Promise<[number, string] | null>}
   */
  async refusal(url) {
    const abort = new AbortController();
    try {
      const response = await fetch(url, { signal: abort.signal, headers: { Accept: "text/event-stream" } });
      if (response.ok) return null;
      const body = await response.json().catch(() => null);
      const code = body && body.error ? body.error.code : 0;
      const reason = body && body.error ? `${code}: ${body.error.message}` : `HTTP ${response.status}`;
      if ([101, 102, 103].includes(code)) return [1008, reason];
      if (code === 106) return [4004, reason];
      if (code === 109) return [4002, reason];
      return null;
    } catch {
      return null;
    } finally {
      abort.abort();
    }
  }

  onStreamOpen(stream) {
    this.stream = stream;
    this.ready = true;
    this.attempt = 0;
    this.client = null; // a stream has no command connection of its own
    this.setState("open");
    this.emit("open", { attempt: this.connections, client: null, user: null, transport: "sse" });
    for (const item of this.queue.drain()) this.send(item);
  }

  onStreamEvent(stream, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    const sub = frame.channel !== undefined ? this.subscriptions.get(frame.channel) : undefined;
    if (frame.op === "subscribed") {
      if (sub) this.onSubscribed(sub, frame);
    } else if (frame.op === "error" && frame.channel !== undefined) {
      if (sub) this.onRefused(sub, new CommandError(frame.code, frame.message));
    } else if (frame.op === "close") {
      this.onStreamEnd(frame.code, frame.reason);
    } else {
      this.onPush(frame);
    }
  }

  /** The stream ended (its `close` push, or an error): like a socket's close. */
  onStreamEnd(code, reason) {
    this.endStream();
    this.ready = false;
    for (const sub of this.subscriptions.values()) if (sub.state === "subscribed") sub.state = "subscribing";
    this.closed(code, reason);
  }

  endStream() {
    this.streams += 1;
    if (this.stream) this.stream.close();
    this.stream = null;
  }

  /** A new channel set over SSE: the same client, a new stream from every channel's position. */
  reopenStream() {
    this.endStream();
    if (!this.subscriptions.size) return;
    this.startStream();
  }

  /** One command as POST /command with the stream's token; its reply or a CommandError. */
  async sendOverHttp({ op, fields, resolve, reject }) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.options.replyTimeout);
    try {
      const headers = { "Content-Type": "application/json" };
      if (this.token) headers.Authorization = `Bearer ${this.token}`;
      const url = await this.httpUrl("command");
      const response = await fetch(url, { method: "POST", headers, body: JSON.stringify({ op, ...fields }), signal: abort.signal });
      const body = await response.json().catch(() => null);
      if (response.ok && body && body.ok) resolve(body);
      else if (body && body.error) reject(new CommandError(body.error.code, body.error.message));
      else reject(new Error(`${op}: HTTP ${response.status}`));
    } catch (error) {
      reject(abort.signal.aborted ? new Error(`${op}: no reply in time`) : error);
    } finally {
      clearTimeout(timer);
    }
  }
}
