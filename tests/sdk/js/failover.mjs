// One `centrifuge` SDK subscriber (npm, unchanged) for tests/deploy/test_sdk_failover.py: it
// subscribes (recoverable) through nginx, prints {"ready":true} once subscribed, then every
// publication it gets until SB_LAST arrives, and prints what it saw as one JSON line.
// Environment: SB_URL (ws://host:port/connection/websocket), SB_TOKEN, SB_CHANNEL, SB_LAST, SB_TIMEOUT_MS.
import WebSocket from 'ws';
import { Centrifuge } from 'centrifuge';

const last = Number(process.env.SB_LAST);
const seen = { data: [], offsets: [], subscribed: [], connecting: 0 };
const client = new Centrifuge(process.env.SB_URL, {
  websocket: WebSocket,
  token: process.env.SB_TOKEN,
  minReconnectDelay: 100,
  maxReconnectDelay: 1000,
});
client.on('connecting', () => { seen.connecting += 1; });  // the first connect, then each reconnect
const sub = client.newSubscription(process.env.SB_CHANNEL, { recoverable: true, positioned: true });
sub.on('publication', (ctx) => { seen.data.push(ctx.data.n); seen.offsets.push(ctx.offset); });
sub.on('subscribed', (ctx) => {
  seen.subscribed.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
  if (seen.subscribed.length === 1) console.log(JSON.stringify({ ready: true }));
});
sub.subscribe();
client.connect();

const deadline = Date.now() + Number(process.env.SB_TIMEOUT_MS || 30000);
const poll = () => {
  if (seen.data.includes(last) || Date.now() > deadline) {
    client.disconnect();
    console.log(JSON.stringify(seen));
    process.exit(0);
  }
  setTimeout(poll, 20);
};
poll();
