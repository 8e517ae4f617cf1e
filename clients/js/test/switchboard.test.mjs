// The built package (dist/) under Node's test runner, against a real Switchboard.
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { after, before, test } from "node:test";

import * as esm from "../dist/switchboard.js";
import { isTerminal, Switchboard, SwitchboardClient } from "../dist/switchboard.js";
import { next, startSwitchboard, until } from "./server.mjs";

const cjs = createRequire(import.meta.url)("../dist/switchboard.cjs");
let server;

before(async () => {
  server = await startSwitchboard();
});
after(async () => {
  await server?.stop();
});

test("the CommonJS build exports what the ES module exports", () => {
  assert.deepEqual(Object.keys(cjs).sort(), Object.keys(esm).sort());
  assert.equal(cjs.backoffDelay(3, 100, 5000, () => 0.5), esm.backoffDelay(3, 100, 5000, () => 0.5));
  assert.deepEqual(cjs.TERMINAL_CODES, esm.TERMINAL_CODES);
});

test("isTerminal: refusals and the server's disconnects end the client, connection troubles do not", () => {
  for (const code of [1003, 1008, 4003, 4004, 4005, 4999]) assert.equal(isTerminal(code), true, String(code));
  for (const code of [1000, 1006, 1011, 1012, 1013, 4000, 4001, 4002]) assert.equal(isTerminal(code), false, String(code));
});

test("Switchboard subscribes, publishes and receives in Node", async () => {
  const client = new Switchboard({ url: `${server.ws}/ws`, getToken: () => server.token("node-ann") });
  try {
    const got = [];
    client.subscribe("node-room", { publication: (pub) => got.push(pub.data) });
    client.connect();
    await next(client, "open");
    const offset = await client.publish("node-room", { text: "hi from node" });
    assert.equal(typeof offset, "number");
    await until(() => got.length === 1);
    assert.deepEqual(got, [{ text: "hi from node" }]);
  } finally {
    client.close();
  }
});

test("a server API disconnect ends Switchboard for good (4003)", async () => {
  const client = new Switchboard({ url: `${server.ws}/ws`, getToken: () => server.token("node-mal"), baseDelay: 10, maxDelay: 50 });
  const reconnecting = [];
  client.addEventListener("reconnecting", (e) => reconnecting.push(e.detail));
  client.connect();
  await next(client, "open");
  const closed = next(client, "close");
  await server.api("disconnect", { user: "node-mal", reason: "account suspended" });
  assert.deepEqual(await closed, { code: 4003, reason: "account suspended", terminal: true, willReconnect: false });
  assert.equal(client.state, "closed");
  assert.equal(client.retryTimer, 0); // no retry was ever scheduled
  assert.deepEqual(reconnecting, []);
  assert.equal(client.connections, 1);
});

test("a server API disconnect ends SwitchboardClient on a tutorial endpoint too", async () => {
  const token = await server.token("node-sam");
  const client = new SwitchboardClient({ url: `${server.ws}/ws/secure?token=${token}`, baseDelay: 10, maxDelay: 50 });
  client.connect();
  await next(client, "open");
  const closed = next(client, "close");
  await server.api("disconnect", { user: "node-sam", code: 4010, reason: "banned" });
  const detail = await closed;
  assert.equal(detail.code, 4010);
  assert.equal(detail.terminal, true);
  assert.equal(detail.willReconnect, false);
  assert.equal(client.connections, 1);
  assert.equal(client.state, "closed");
});
