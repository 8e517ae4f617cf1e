// The official `centrifuge` SDK (npm, pinned in package-lock.json), unchanged, against a real
// Switchboard instance: run by tests/sdk/test_centrifuge_js.py, which reads the JSON this prints.
// Environment: SB_HTTP (http://host:port), SB_API_KEY, SB_SECRET (HS256, to sign test tokens).
import WebSocket from 'ws';
import {
  api, client, connected, recovery, report, serverSide, subscribed, token, twoOn, until,
} from './common.mjs';

const HTTP = process.env.SB_HTTP;
const REFRESH_WAIT_MS = Number(process.env.SB_REFRESH_WAIT_MS || 5000);

async function basics() {
  const { one, two, sub, seen, other } = await twoOn('jo-two', 'chat:js');
  await sub.publish({ text: 'hi' });
  await until(() => seen.data.length === 1 && other.data.length === 1, 'the publication on both');
  const presence = await sub.presence();
  const stats = await sub.presenceStats();
  const history = await sub.history({ limit: -1 });
  const rpc = await one.rpc('echo.it', { a: 1 });
  let rpcDenied = null;
  try { await one.rpc('hook.deny', {}); } catch (e) { rpcDenied = e.code; }
  two.disconnect();
  await until(() => seen.leaves.length === 1, 'a leave');
  one.disconnect();
  return {
    data: seen.data, otherData: other.data, offsets: seen.offsets,
    presenceUsers: Object.values(presence.clients).map((info) => info.user).sort(),
    numClients: stats.numClients,
    history: history.publications.map((p) => [p.offset, p.data]),
    rpc: rpc.data, rpcDenied, leftIsTheOther: seen.leaves[0] === seen.joins[1],
  };
}

async function refresh() {
  let issued = 0;
  const c = client({ getToken: async () => { issued += 1; return token('jo-refresh', 2); } });
  const states = [];
  c.on('state', (ctx) => states.push(ctx.newState));
  await connected(c);
  await new Promise((resolve) => setTimeout(resolve, REFRESH_WAIT_MS));
  const state = c.state;
  c.disconnect();
  return { issued, state, reconnects: states.filter((s) => s === 'connecting').length };
}

async function subscriptionToken() {
  const messages = [];
  const c = await connected(client({ token: token('jo-team') }));
  c.on('message', (ctx) => messages.push(ctx.data));
  const [, seen] = await subscribed(c, 'team:js', { token: token('jo-team', 600, { channel: 'team:js' }) });
  let denied = null;
  const refused = c.newSubscription('team:other');
  refused.on('error', (ctx) => { denied = ctx.error.code; });
  refused.on('unsubscribed', (ctx) => { denied = denied ?? ctx.code; });
  refused.subscribe();
  await api('publish', { channel: 'team:js', data: { from: 'api' } });
  await api('send', { user: 'jo-team', data: { note: 1 } });
  await until(() => seen.data.length === 1 && messages.length === 1 && denied !== null, 'publication, message, refusal');
  c.disconnect();
  return { data: seen.data, messages, denied };
}

async function terminalDisconnects() {
  const found = {};
  for (const [user, body] of [['jo-stop', { code: 4600, reason: 'banned' }], ['jo-default', {}]]) {
    const c = await connected(client({ token: token(user) }));
    const closed = new Promise((resolve) => c.on('disconnected', (ctx) => resolve(ctx.code)));
    await api('disconnect', { user, ...body });
    found[user] = await closed;
  }
  return found;
}

async function interop() {
  const c = await connected(client());
  const [sub, seen] = await subscribed(c, 'chat:jsmix');
  const ws = new WebSocket(HTTP.replace('http', 'ws') + '/ws');
  const frames = [];
  ws.on('message', (raw) => frames.push(JSON.parse(raw.toString())));
  await new Promise((resolve) => ws.on('open', resolve));
  ws.send(JSON.stringify({ id: 1, op: 'connect' }));
  ws.send(JSON.stringify({ id: 2, op: 'subscribe', channel: 'chat:jsmix' }));
  await until(() => frames.some((f) => f.id === 2), 'the /ws subscribe');
  await sub.publish({ from: 'sdk' });
  await until(() => frames.some((f) => f.op === 'pub'), 'the SDK publication on /ws');
  ws.send(JSON.stringify({ id: 3, op: 'publish', channel: 'chat:jsmix', data: { from: 'ws' } }));
  await api('publish', { channel: 'chat:jsmix', data: { from: 'api' } });
  await until(() => seen.data.length === 3, 'three publications');
  ws.close();
  c.disconnect();
  return { sdk: seen.data, ws: frames.filter((f) => f.op === 'pub').map((f) => f.data) };
}

await report({
  serverSide: () => serverSide('jo-server', 'chat:jsserver'),
  basics,
  refresh,
  subscriptionToken,
  recovery: () => recovery('jo-recover', 'chat:jsrec'),
  terminalDisconnects,
  interop,
});
