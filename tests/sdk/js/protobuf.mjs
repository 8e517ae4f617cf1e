// The official `centrifuge` SDK's Protobuf build (`centrifuge/build/protobuf`: the
// centrifuge-protobuf subprotocol, binary frames), unchanged, against a real Switchboard; and,
// in both builds, what the SDK does after each range of disconnect codes. Run by
// tests/sdk/test_centrifuge_js_protobuf.py, which reads the JSON this prints.
// Environment: SB_HTTP (http://host:port), SB_API_KEY, SB_SECRET (HS256, to sign test tokens).
import { Centrifuge as JsonCentrifuge } from 'centrifuge';
import { Centrifuge } from 'centrifuge/build/protobuf';
import {
  api, client as anyClient, connected, recovery, report, serverSide, subscribed as recorded, token, twoOn, until,
} from './common.mjs';

const encode = (value) => new TextEncoder().encode(JSON.stringify(value));
const decode = (bytes) => JSON.parse(new TextDecoder().decode(bytes));

// The Protobuf build unless told otherwise; publications' data (bytes) decoded from JSON.
const client = (options = {}, Build = Centrifuge) => anyClient(options, Build);
const subscribed = (c, channel, options = {}) => recorded(c, channel, options, decode);

async function basics() {
  const { one, two, sub, seen, other } = await twoOn('pj-two', 'chat:pbjs', client, subscribed);
  await sub.publish(encode({ text: 'hi' }));
  await until(() => seen.data.length === 1 && other.data.length === 1, 'the publication on both');
  const presence = await sub.presence();
  const stats = await sub.presenceStats();
  const history = await sub.history({ limit: -1 });
  const rpc = await one.rpc('echo.it', encode({ a: 1 }));
  two.disconnect();
  await until(() => seen.leaves.length === 1, 'a leave');
  one.disconnect();
  return {
    data: seen.data, otherData: other.data, offsets: seen.offsets,
    presenceUsers: Object.values(presence.clients).map((info) => info.user).sort(),
    numClients: stats.numClients, numUsers: stats.numUsers,
    history: history.publications.map((p) => [p.offset, decode(p.data)]),
    rpc: decode(rpc.data), leftIsTheOther: seen.leaves[0] === seen.joins[1],
  };
}

async function tokensAndMessages() {
  let issued = 0;
  const messages = [];
  const c = client({ getToken: async () => { issued += 1; return token('pj-team', 2); } });
  c.on('message', (ctx) => messages.push(decode(ctx.data)));
  const states = [];
  c.on('state', (ctx) => states.push(ctx.newState));
  await connected(c);
  const [, seen] = await subscribed(c, 'team:pbjs', { token: token('pj-team', 600, { channel: 'team:pbjs' }) });
  await api('publish', { channel: 'team:pbjs', data: { from: 'api' } });
  await api('send', { user: 'pj-team', data: { note: 1 } });
  await until(() => seen.data.length === 1 && messages.length === 1, 'publication and message');
  await until(() => issued >= 3, 'two refreshes');  // past the first 2 s token and the grace
  const state = c.state;
  c.disconnect();
  return { data: seen.data, messages, issued, state, reconnects: states.filter((s) => s === 'connecting').length };
}

// What the SDK does after the server API's disconnect with `body`: "reconnect" (it goes to
// connecting with that code, then is connected again) or "stop" (disconnected with that code).
async function afterDisconnect(Build, user, body) {
  const c = await connected(client({ token: token(user), minReconnectDelay: 200, maxReconnectDelay: 200 }, Build));
  let outcome = null;
  let code = null;
  c.on('connecting', (ctx) => { if (outcome === null) code = ctx.code; });
  c.on('connected', () => { if (code !== null && outcome === null) outcome = 'reconnect'; });
  c.on('disconnected', (ctx) => { if (outcome === null) { code = ctx.code; outcome = 'stop'; } });
  await api('disconnect', { user, ...body });
  await until(() => outcome !== null, `the SDK's answer to ${JSON.stringify(body)}`);
  const found = [code, outcome];
  c.disconnect();
  return found;
}

// 3005, from the 3000-3499 range: the token expired and the SDK could not refresh it (its
// getToken failed meanwhile); the SDK reconnects, with a token from getToken once it works again.
async function expiredToken(Build, user) {
  let calls = 0;
  let failing = false;
  const c = client({
    getToken: async () => {
      calls += 1;
      if (failing) throw new Error('the token endpoint is down');
      return token(user, 2);
    },
    minReconnectDelay: 200, maxReconnectDelay: 200,
  }, Build);
  await connected(c);
  failing = true;
  let outcome = null;
  let code = null;
  c.on('connecting', (ctx) => { if (code === null) { code = ctx.code; failing = false; } });
  c.on('connected', () => { if (code !== null && outcome === null) outcome = 'reconnect'; });
  c.on('disconnected', (ctx) => { if (outcome === null) { code = ctx.code; outcome = 'stop'; } });
  await until(() => outcome !== null, 'the expiry and what the SDK does after it');
  const found = [code, outcome];
  c.disconnect();
  return found;
}

async function disconnectCodes() {
  const found = {};
  for (const [name, Build] of [['protobuf', Centrifuge], ['json', JsonCentrifuge]]) {
    const codes = [[4005, 'a'], [4499, 'b'], [4500, 'c'], [4999, 'd']];
    const runs = codes.map(([code, tag]) => afterDisconnect(Build, `pj-${name}-${tag}`, { code, reason: 'test' }));
    runs.push(afterDisconnect(Build, `pj-${name}-default`, {}));
    runs.push(expiredToken(Build, `pj-${name}-expired`));
    found[name] = await Promise.all(runs);
    // A bad token at connect (101, then the 3500 close): the SDK stops, with the reply's code.
    const bad = client({ token: 'not-a-token' }, Build);
    const stopped = new Promise((resolve) => bad.on('disconnected', (ctx) => resolve(ctx.code)));
    bad.connect();
    found[name].push([await stopped, bad.state === 'disconnected' ? 'stop' : bad.state]);
  }
  return found;
}

await report({
  basics,
  tokensAndMessages,
  recovery: () => recovery('pj-recover', 'chat:pbjsrec', client, subscribed),
  serverSide: () => serverSide('pj-server', 'chat:pbjsserver', client, decode),
  disconnectCodes,
});
