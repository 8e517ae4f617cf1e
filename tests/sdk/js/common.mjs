// What the SDK scripts here share (scenarios, protobuf, options, delta, emulation): HS256 test
// tokens, the server API, polling with a deadline, an SDK client with its subscription recorded,
// printing every scenario's result as one JSON line for the Python test that runs the script, and
// the two scenarios the JSON and Protobuf scripts share.
// Environment: SB_SECRET (signs the tokens); SB_HTTP (http://host:port) for `api` and `client`.
import { createHmac } from 'node:crypto';
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

function b64(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

export function token(sub, ttl = 600, claims = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttl, ...claims })}`;
  return `${body}.${createHmac('sha256', process.env.SB_SECRET).update(body).digest('base64url')}`;
}

// The server API of the instance at `base` (http://host:port).
export function apiAt(base) {
  return async (method, body) => {
    const response = await fetch(`${base}/api/v1/${method}`, {
      method: 'POST',
      headers: { 'X-API-Key': process.env.SB_API_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${method}: ${response.status} ${await response.text()}`);
    return response.json();
  };
}

export function api(method, body) {
  return apiAt(process.env.SB_HTTP)(method, body);
}

export function until(predicate, what, ms = 8000) {
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

// An SDK client (the JSON build unless `Build` says otherwise) for SB_HTTP's WebSocket endpoint.
export function client(options = {}, Build = Centrifuge) {
  const url = process.env.SB_HTTP.replace('http', 'ws') + '/connection/websocket';
  return new Build(url, { websocket: WebSocket, ...options });
}

export async function connected(c) {
  c.connect();
  await c.ready(5000);
  return c;
}

// A subscription and what it saw; `decode` turns a publication's data into what is recorded.
export async function subscribed(c, channel, options = {}, decode = (data) => data) {
  const seen = { data: [], offsets: [], joins: [], leaves: [], subscribed: [] };
  const sub = c.newSubscription(channel, options);
  sub.on('publication', (ctx) => { seen.data.push(decode(ctx.data)); seen.offsets.push(ctx.offset); });
  sub.on('join', (ctx) => seen.joins.push(ctx.info.client));
  sub.on('leave', (ctx) => seen.leaves.push(ctx.info.client));
  sub.on('subscribed', (ctx) => seen.subscribed.push(ctx));
  sub.subscribe();
  await sub.ready(5000);
  return [sub, seen];
}

// Runs every scenario at once, prints {name: result or {error}} as JSON and exits (the SDK's
// reconnect timers would keep the process alive).
export async function report(scenarios) {
  const results = {};
  await Promise.all(Object.entries(scenarios).map(async ([name, run]) => {
    try {
      results[name] = await run();
    } catch (error) {
      results[name] = { error: String(error && error.stack || error) };
    }
  }));
  process.stdout.write(JSON.stringify(results));
  process.exit(0);
}

// The scenarios both builds run the same way (scenarios.mjs in JSON, protobuf.mjs in Protobuf):
// `open` makes the build's client, `record` subscribes with it, `decode` reads a publication.

// An anonymous client and `user`'s, both subscribed to `channel` with join/leave pushes (the
// namespace has join_leave = true), once the first has seen both joins.
export async function twoOn(user, channel, open = client, record = subscribed) {
  const one = await connected(open());
  const two = await connected(open({ token: token(user) }));
  const [sub, seen] = await record(one, channel, { joinLeave: true });
  const [, other] = await record(two, channel, { joinLeave: true });
  await until(() => seen.joins.length === 2, 'two joins');
  return { one, two, sub, seen, other };
}

// A recoverable subscription; the server API disconnects the user with 4100 (the SDK reconnects),
// two publications go by meanwhile: what the resubscribe recovered.
export async function recovery(user, channel, open = client, record = subscribed) {
  const c = await connected(open({ token: token(user), minReconnectDelay: 1000, maxReconnectDelay: 1000 }));
  const [, seen] = await record(c, channel, { recoverable: true });
  await api('publish', { channel, data: 1 });
  await until(() => seen.data.length === 1, 'the first publication');
  const codes = [];
  c.on('connecting', (ctx) => codes.push(ctx.code));
  await api('disconnect', { user, code: 4100, reason: 'moved' });
  await until(() => codes.length === 1, 'the disconnect');
  await api('publish', { channel, data: 2 });
  await api('publish', { channel, data: 3 });
  await until(() => seen.subscribed.length === 2 && seen.data.length === 3, 'the recovery');
  const again = seen.subscribed[1];
  c.disconnect();
  return {
    data: seen.data, offsets: seen.offsets, reconnectCode: codes[0],
    wasRecovering: again.wasRecovering, recovered: again.recovered,
  };
}

// The server API subscribes the user to `channel`, publishes there, then unsubscribes: the
// client's own subscribed, publication and unsubscribed events.
export async function serverSide(user, channel, open = client, decode = (data) => data) {
  const c = await connected(open({ token: token(user) }));
  const seen = { subscribed: [], data: [], unsubscribed: [] };
  c.on('subscribed', (ctx) => seen.subscribed.push([ctx.channel, ctx.recoverable]));
  c.on('publication', (ctx) => seen.data.push([ctx.channel, decode(ctx.data), ctx.offset]));
  c.on('unsubscribed', (ctx) => seen.unsubscribed.push(ctx.channel));
  await api('subscribe', { user, channel });
  await until(() => seen.subscribed.length === 1, 'the server-side subscribe push');
  await api('publish', { channel, data: { from: 'api' } });
  await until(() => seen.data.length === 1, 'the publication of a server-side subscription');
  await api('unsubscribe', { user, channel });
  await until(() => seen.unsubscribed.length === 1, 'the server-side unsubscribe push');
  c.disconnect();
  return seen;
}
