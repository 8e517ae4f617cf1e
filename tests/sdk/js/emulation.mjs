// centrifuge-js (npm, pinned in package-lock.json), unchanged, over Switchboard's emulated
// transports: run by tests/sdk/test_centrifuge_emulation.py, which reads the JSON this prints.
// The WebSocket endpoint it is given is refused (a path no route has), so the SDK falls back to
// http_stream or sse on instance A, and every emulation request goes to instance B.
// Environment: SB_A, SB_B (http://host:port), SB_API_KEY, SB_SECRET; SB_WS, the WebSocket
// endpoint to try first (tests/deploy: nginx's, through a config that drops the upgrade).
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const A = process.env.SB_A;
const B = process.env.SB_B;
const WS = process.env.SB_WS || A.replace('http', 'ws') + '/connection/no-such-path';

function b64(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function token(sub, ttl = 600) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttl })}`;
  return `${body}.${createHmac('sha256', process.env.SB_SECRET).update(body).digest('base64url')}`;
}

async function api(method, body) {
  const response = await fetch(`${A}/api/v1/${method}`, {
    method: 'POST',
    headers: { 'X-API-Key': process.env.SB_API_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${method}: ${response.status} ${await response.text()}`);
  return response.json();
}

// Node 20 has no EventSource: a small one over fetch, reading the stream as the HTML spec's
// parser does (data lines joined by newlines, dispatched at a blank line, comments skipped).
class FetchEventSource {
  constructor(url) {
    this.onopen = null; this.onmessage = null; this.onerror = null;
    this._abort = new AbortController();
    this._run(url).catch((error) => { if (!this._abort.signal.aborted && this.onerror) this.onerror(error); });
  }

  async _run(url) {
    const response = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: this._abort.signal });
    if (!response.ok) throw new Error(`status ${response.status}`);
    if (this.onopen) this.onopen();
    const decoder = new TextDecoder();
    let buffer = '';
    let data = [];
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, '');
        buffer = buffer.slice(end + 1);
        if (line === '') {
          if (data.length && this.onmessage) this.onmessage({ data: data.join('\n') });
          data = [];
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
        }
      }
    }
    throw new Error('stream ended');
  }

  close() {
    this._abort.abort();
  }
}

function until(predicate, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + ms;
    const poll = () => {
      if (predicate()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(poll, 20);
    };
    poll();
  });
}

function emulated(kind, user, posts) {
  // Every request the SDK makes goes through here: the emulation POSTs are recorded.
  const recording = async (url, options) => {
    const response = await fetch(url, options);
    if (String(url).endsWith('/emulation')) posts.push({ origin: new URL(url).origin, status: response.status });
    return response;
  };
  return new Centrifuge([
    { transport: 'websocket', endpoint: WS },
    { transport: kind, endpoint: `${A}/connection/${kind}` },
  ], {
    websocket: WebSocket,
    fetch: recording,
    eventsource: FetchEventSource,
    emulationEndpoint: `${B}/emulation`,
    token: token(user),
    minReconnectDelay: 300,
    maxReconnectDelay: 1000,
  });
}

async function over(kind) {
  const user = `jo-${kind}`;
  const channel = `chat:emu-${kind}`;
  const posts = [];
  const c = emulated(kind, user, posts);
  const transports = [];
  c.on('connected', (ctx) => transports.push(ctx.transport));
  c.connect();
  await c.ready(10000);
  const seen = { data: [], offsets: [], subscribed: [] };
  const sub = c.newSubscription(channel, { recoverable: true });
  sub.on('publication', (ctx) => { seen.data.push(ctx.data); seen.offsets.push(ctx.offset); });
  sub.on('subscribed', (ctx) => seen.subscribed.push(ctx));
  sub.subscribe();
  await sub.ready(10000);
  await sub.publish({ n: 1 });
  await until(() => seen.data.length === 1, 'its own publication');
  const presence = await sub.presence();
  const stats = await sub.presenceStats();
  const history = await sub.history({ limit: 10 });
  // The stream is cut (the server ends it with a code the SDK reconnects after); two
  // publications go by; the SDK comes back over the same transport and recovers them.
  const codes = [];
  c.on('connecting', (ctx) => codes.push(ctx.code));
  await api('disconnect', { user, code: 4100, reason: 'cut' });
  await until(() => codes.length === 1, 'the cut');
  await api('publish', { channel, data: { n: 2 } });
  await api('publish', { channel, data: { n: 3 } });
  await until(() => seen.subscribed.length === 2 && seen.data.length === 3, 'the recovery');
  c.disconnect();
  const again = seen.subscribed[1];
  return {
    transports,
    data: seen.data.map((d) => d.n),
    offsets: seen.offsets,
    presenceUsers: Object.values(presence.clients).map((info) => info.user),
    numClients: stats.numClients,
    history: history.publications.map((p) => p.data.n),
    cutCode: codes[0],
    wasRecovering: again.wasRecovering,
    recovered: again.recovered,
    postOrigins: [...new Set(posts.map((p) => p.origin))],
    postStatuses: [...new Set(posts.map((p) => p.status))],
  };
}

const results = {};
await Promise.all(['http_stream', 'sse'].map(async (kind) => {
  try {
    results[kind] = await over(kind);
  } catch (error) {
    results[kind] = { error: String(error && error.stack || error) };
  }
}));
process.stdout.write(JSON.stringify(results));
process.exit(0);
