// The official `centrifuge` SDK (npm, pinned in package-lock.json), unchanged, on Centrifugo's
// namespace options and server-side subscriptions: run by tests/sdk/test_namespace_options_js.py,
// which reads the JSON this prints. Environment: SB_HTTP, SB_API_KEY, SB_SECRET (HS256),
// SB_REFRESH_WAIT_MS (past a 2 s subscription token's expiry and the grace after it).
import { api, client, connected, report, token, until } from './common.mjs';

const REFRESH_WAIT_MS = Number(process.env.SB_REFRESH_WAIT_MS || 5000);

// A client whose server-side subscriptions are recorded from before its connect reply.
async function serverSide(options) {
  const c = client(options);
  const seen = { subscribed: [], data: [] };
  c.on('subscribed', (ctx) => seen.subscribed.push({
    channel: ctx.channel, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered,
  }));
  c.on('publication', (ctx) => seen.data.push([ctx.channel, ctx.data, ctx.offset]));
  await connected(c);
  return [c, seen];
}

async function personal() {
  const [c, seen] = await serverSide({ token: token('jo-pat') });
  await api('publish', { channel: 'personal:#jo-pat', data: { for: 'jo-pat' } });
  await until(() => seen.data.length === 1, 'the personal publication');
  c.disconnect();
  return seen;
}

async function tokenChannels() {
  const options = { token: token('jo-feed', 600, { channels: ['feed:jo'] }), minReconnectDelay: 1000, maxReconnectDelay: 1000 };
  const [c, seen] = await serverSide(options);
  await api('publish', { channel: 'feed:jo', data: 1 });
  await until(() => seen.data.length === 1, 'the first publication');
  await api('disconnect', { user: 'jo-feed', code: 4100, reason: 'moved' });
  await until(() => c.state !== 'connected', 'the disconnect');
  await api('publish', { channel: 'feed:jo', data: 2 });
  await api('publish', { channel: 'feed:jo', data: 3 });
  await until(() => seen.data.length === 3, 'the recovered publications', 10000);
  c.disconnect();
  return { ...seen, subscribed: seen.subscribed.filter((s) => s.channel === 'feed:jo') };
}

async function subRefresh() {
  const c = await connected(client({ token: token('jo-sub') }));
  let issued = 0;
  const events = { subscribed: 0, unsubscribed: 0, data: [] };
  const sub = c.newSubscription('team:jsrefresh', {
    getToken: async (ctx) => { issued += 1; return token('jo-sub', 2, { channel: ctx.channel }); },
  });
  sub.on('subscribed', () => { events.subscribed += 1; });
  sub.on('unsubscribed', () => { events.unsubscribed += 1; });
  sub.on('publication', (ctx) => events.data.push(ctx.data));
  sub.subscribe();
  await sub.ready(5000);
  await new Promise((resolve) => setTimeout(resolve, REFRESH_WAIT_MS));
  await api('publish', { channel: 'team:jsrefresh', data: 'still here' });
  await until(() => events.data.length === 1, 'a publication after the refreshes');
  const state = sub.state;
  c.disconnect();
  return { issued, state, ...events };
}

async function send() {
  const c = await connected(client());
  await c.send({ n: 1 });
  await c.send({ n: 2 });
  const found = await c.rpc('sent.list', {}); // commands run in order: both sends are in
  c.disconnect();
  return { sent: found.data };
}

await report({ personal, tokenChannels, subRefresh, send });
