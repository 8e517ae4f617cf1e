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

/** Close codes after which retrying cannot help: the server refused this client. */
export const TERMINAL_CODES = Object.freeze([1003, 1008]);

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

export class SwitchboardClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    this.options = {
      baseDelay: 500,
      maxDelay: 15000,
      maxRetries: Infinity,
      queueLimit: 100,
      deadAfter: 0,
      resume: true,
      ...options,
    };
    /** The offset and epoch of the last channel frame: where a reconnect resumes. */
    this.position = this.options.position || null;
    this.queue = new BoundedQueue(this.options.queueLimit);
    /** @type {WebSocket | null} */
    this.socket = null;
    this.state = "closed";
    this.attempt = 0;
    this.connections = 0;
    this.stopped = false;
    this.ready = false;
    this.retryTimer = 0;
    this.deadTimer = 0;
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
    clearTimeout(this.deadTimer);
    if (this.socket) this.socket.close(1000, "client closed");
    this.setState("closed");
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

  async open() {
    if (this.stopped) return;
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let url;
    try {
      url = typeof this.options.url === "function" ? await this.options.url() : this.options.url;
      // With first-message auth the position travels in the auth message instead.
      if (this.options.resume && this.position && !this.options.getToken) url = withPosition(url, this.position);
    } catch (error) {
      this.emit("error", { error });
      this.retry();
      return;
    }
    const Impl = this.options.WebSocketImpl || WebSocket;
    const socket = new Impl(url);
    this.socket = socket;
    this.ready = false;
    this.connections += 1;
    socket.onopen = () => {
      this.watchdog();
      if (!this.options.getToken) this.onReady();
    };
    socket.onmessage = (event) => this.onFrame(socket, event.data);
    socket.onerror = () => this.emit("error", { error: new Error("WebSocket error") });
    socket.onclose = (event) => this.onClose(socket, event.code, event.reason);
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
    const terminal = TERMINAL_CODES.includes(code);
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

  /** A socket that goes quiet for deadAfter ms is treated as dead: close it and reconnect. */
  watchdog() {
    if (!this.options.deadAfter) return;
    clearTimeout(this.deadTimer);
    const socket = this.socket;
    this.deadTimer = setTimeout(() => {
      if (socket === this.socket) socket.close(4002, "no frames: connection presumed dead");
    }, this.options.deadAfter);
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
