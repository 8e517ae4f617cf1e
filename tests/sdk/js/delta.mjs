// centrifuge-js with `delta: 'fossil'` against a real Switchboard: run by tests/sdk/test_delta.py.
// A stream of ~4 KB JSON states, each changing one field, a server-side disconnect that makes the
// SDK reconnect and recover, then more states. Prints what was published and what the SDK rebuilt.
// Environment: SB_HTTP, SB_API_KEY, SB_SECRET (HS256 test tokens), SB_STATE_BYTES.
import { api, client, token, until as untilWithin } from './common.mjs';

const STATE_BYTES = Number(process.env.SB_STATE_BYTES || 4096);
const CHANNEL = 'dash:js';
const until = (predicate, what) => untilWithin(predicate, what, 10000);

const state = {};
for (let i = 0; i < 64; i++) state[`panel_${i}`] = { value: 0, unit: 'req/s', title: `Panel n° ${i}` };
while (JSON.stringify(state).length < STATE_BYTES) state[`extra_${Object.keys(state).length}`] = '·'.repeat(20);
let step = 0;
const published = [];

async function publishSome(count) {
  for (let i = 0; i < count; i++) {
    step += 1;
    state[`panel_${(step * 7) % 64}`].value = step * 1000 + i;
    published.push(JSON.parse(JSON.stringify(state)));
    await api('publish', { channel: CHANNEL, data: state });
  }
}

const c = client({ token: token('jo-delta'), minReconnectDelay: 1000, maxReconnectDelay: 1000 });
c.connect();
await c.ready(5000);
const received = [];
const subscribed = [];
const sub = c.newSubscription(CHANNEL, { delta: 'fossil', recoverable: true });
sub.on('publication', (ctx) => received.push(ctx.data));
sub.on('subscribed', (ctx) => subscribed.push(ctx));
sub.subscribe();
await sub.ready(5000);
await publishSome(30);
await until(() => received.length === 30, '30 states');
await api('disconnect', { user: 'jo-delta', code: 4100, reason: 'moved' });
await until(() => c.state !== 'connected', 'the disconnect');
await publishSome(3);
await until(() => subscribed.length === 2, 'the resubscribe');
await publishSome(3);
await until(() => received.length === 36, 'the recovered and the live states');
process.stdout.write(JSON.stringify({ published, received, recovered: subscribed[1].recovered, stats: sub.deltaStats() }));
c.disconnect();
