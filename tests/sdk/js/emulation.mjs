// centrifuge-js (npm, pinned in package-lock.json), unchanged, over Switchboard's emulated
// transports: run by tests/sdk/test_centrifuge_emulation.py, which reads the JSON this prints.
// The WebSocket endpoint it is given is refused (a path no route has), so the SDK falls back to
// http_stream (or, that refused too, to sse) on instance A, and every emulation request goes to
// instance B.
// Environment: SB_A, SB_B (http://host:port), SB_API_KEY, SB_SECRET; SB_WS, the WebSocket
// endpoint to try first (tests/deploy: nginx's, through a config that drops the upgrade);
// SB_PONGS, how many pongs to see first (0 where the server's pings are far apart).
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';
import { apiAt, report, token, until as untilWithin } from './common.mjs';

const A = process.env.SB_A;
const B = process.env.SB_B;
const WS = process.env.SB_WS || A.replace('http', 'ws') + '/connection/no-such-path';
const PONGS = Number(process.env.SB_PONGS ?? 3); // pongs to wait for: the server pings each second
const api = apiAt(A);
const until = (predicate, what) => untilWithin(predicate, what, 10000);

// Node 20 has no EventSource: a small one over fetch, reading the stream as the HTML spec's
// parser does (data lines joined by newlines, dispatched at a blank line, comments skipped).
class FetchEventSource {
  constructor(url, streams) {
    this.onopen = null; this.onmessage = null; this.onerror = null;
    this._closed = new AbortController(); // close()
    const network = new AbortController(); // cut(): the stream fails, as when the network does
    streams.push(network);
    this._signal = AbortSignal.any([this._closed.signal, network.signal]);
    this._run(url).catch((error) => { if (!this._closed.signal.aborted && this.onerror) this.onerror(error); });
  }

  async _run(url) {
    const response = await fetch(url, { headers: { Accept: 'text/event-stream' }, signal: this._signal });
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
    this._closed.abort();
  }
}

// A client's streams, cut as a network failure would (no disconnect push, no close): aborting
// one that ended already does nothing.
function cut(streams) {
  for (const controller of streams) controller.abort(new Error('cut by the test'));
}

function emulated(kind, user, posts, streams) {
  // Every request the SDK makes goes through here: the emulation POSTs are recorded.
  const recording = async (url, options) => {
    if (String(url).endsWith('/connection/http_stream')) {
      const controller = new AbortController();
      streams.push(controller);
      options = { ...options, signal: AbortSignal.any([options.signal, controller.signal]) };
    }
    const response = await fetch(url, options);
    if (String(url).endsWith('/emulation')) {
      const pong = JSON.parse(options.body).data === '{}'; // the answer to a server ping
      posts.push({ origin: new URL(url).origin, status: response.status, pong });
    }
    return response;
  };
  // All three transports, in the SDK's order of preference. For the sse run the http_stream
  // endpoint is refused too (a path no route has), so the SDK falls back twice.
  const stream = kind === 'http_stream' ? `${A}/connection/http_stream` : `${A}/connection/no-such-stream`;
  return new Centrifuge([
    { transport: 'websocket', endpoint: WS },
    { transport: 'http_stream', endpoint: stream },
    { transport: 'sse', endpoint: `${A}/connection/sse` },
  ], {
    websocket: WebSocket,
    fetch: recording,
    eventsource: class extends FetchEventSource {
      constructor(url) { super(url, streams); }
    },
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
  const streams = [];
  const c = emulated(kind, user, posts, streams);
  const transports = [];
  c.on('connected', (ctx) => transports.push(ctx.transport));
  if (process.env.SB_DEBUG) for (const e of ['state', 'connecting', 'disconnected', 'error']) c.on(e, (ctx) => console.error(kind, e, JSON.stringify(ctx)));
  c.connect();
  await c.ready(10000);
  const seen = { data: [], offsets: [], subscribed: [] };
  const sub = c.newSubscription(channel, { recoverable: true });
  sub.on('publication', (ctx) => { seen.data.push(ctx.data); seen.offsets.push(ctx.offset); });
  sub.on('subscribed', (ctx) => seen.subscribed.push(ctx));
  sub.subscribe();
  await sub.ready(10000);
  // Pings every second (SWITCHBOARD_PING_INTERVAL): each pong travels in an emulation request
  // to the other instance and back to the stream's, in time, or the stream would be closed 3012.
  await until(() => posts.filter((p) => p.pong).length >= PONGS, `${PONGS} pongs`);
  const connectsAfterPongs = transports.length;
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
  // Then the stream is cut under it, as by the network: the SDK sees its transport fail,
  // reconnects and recovers what was published meanwhile.
  cut(streams);
  await api('publish', { channel, data: { n: 4 } });
  await api('publish', { channel, data: { n: 5 } });
  await until(() => seen.subscribed.length === 3 && seen.data.length === 5, 'the recovery after a cut');
  c.disconnect();
  const again = seen.subscribed[1];
  const afterCut = seen.subscribed[2];
  return {
    transports,
    connectsAfterPongs,
    data: seen.data.map((d) => d.n),
    offsets: seen.offsets,
    presenceUsers: Object.values(presence.clients).map((info) => info.user),
    numClients: stats.numClients,
    history: history.publications.map((p) => p.data.n),
    cutCode: codes[0],
    wasRecovering: again.wasRecovering,
    recovered: again.recovered,
    networkCutCode: codes[1],
    recoveredAfterCut: afterCut.recovered,
    postOrigins: [...new Set(posts.map((p) => p.origin))],
    postStatuses: [...new Set(posts.map((p) => p.status))],
  };
}

await report({ http_stream: () => over('http_stream'), sse: () => over('sse') });
