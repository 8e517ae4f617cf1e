// The SSE fallback of the npm package in Node, against a real Switchboard. Node 20 has no
// EventSource, so the test gives the client a small one over fetch (EventSourceImpl), and a
// WebSocket that never opens (a proxy that refuses upgrades), as a page behind one would see.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Switchboard } from "../dist/switchboard.js";
import { next, startSwitchboard, until } from "./server.mjs";

let server;

before(async () => {
  server = await startSwitchboard();
});
after(async () => {
  await server?.stop();
});

/** Refused at the upgrade: closes (1006) without ever opening. */
class RefusedWebSocket {
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onclose?.({ code: 1006, reason: "" });
    }, 5);
  }
  close() {}
}

/** What the client uses of EventSource: onopen, onmessage, onerror, close(). */
class FetchEventSource {
  static opened = [];
  constructor(url) {
    this.url = url;
    this.abort = new AbortController();
    FetchEventSource.opened.push(url);
    this.read();
  }
  async read() {
    try {
      const response = await fetch(this.url, { headers: { Accept: "text/event-stream" }, signal: this.abort.signal });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      this.onopen?.({});
      const decoder = new TextDecoder();
      let buffer = "";
      let data = [];
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk, { stream: true });
        for (let end = buffer.indexOf("\n"); end >= 0; end = buffer.indexOf("\n")) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          if (line === "" && data.length) {
            this.onmessage?.({ data: data.join("\n") });
            data = [];
          } else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
      }
      throw new Error("the stream ended");
    } catch (error) {
      if (!this.abort.signal.aborted) this.onerror?.({ error });
    }
  }
  close() {
    this.abort.abort();
  }
}

test("Switchboard falls back to SSE and HTTP commands when WebSockets are refused", async () => {
  const transports = [];
  const client = new Switchboard({
    url: `${server.ws}/ws`,
    getToken: () => server.token("node-fallback"),
    baseDelay: 10,
    maxDelay: 50,
    WebSocketImpl: RefusedWebSocket,
    EventSourceImpl: FetchEventSource,
  });
  client.addEventListener("transport", (e) => transports.push(e.detail.transport));
  const got = [];
  const subscribed = [];
  client.subscribe("node-fb", {
    publication: (pub) => got.push(pub.data),
    subscribed: (reply) => subscribed.push(reply.channel),
  });
  try {
    client.connect();
    const opened = await next(client, "open");
    assert.equal(opened.transport, "sse");
    assert.deepEqual(transports, ["sse"]);
    assert.equal(client.connections, 3); // two refused upgrades, then the stream
    await until(() => subscribed.length === 1);
    // A publish goes as POST /command and comes back over the stream; the server API's too.
    const offset = await client.publish("node-fb", { text: "over http" });
    assert.equal(typeof offset, "number");
    await server.api("publish", { channel: "node-fb", data: { text: "from the backend" } });
    await until(() => got.length === 2);
    assert.deepEqual(got, [{ text: "over http" }, { text: "from the backend" }]);
    // Another channel: the stream is reopened with both.
    const more = [];
    client.subscribe("node-fb-2", { publication: (pub) => more.push(pub.data) });
    await until(() => FetchEventSource.opened.at(-1).includes("channel=node-fb-2"));
    await until(() => client.subscriptions.get("node-fb-2").state === "subscribed");
    await client.publish("node-fb-2", "second");
    await until(() => more.length === 1);
    assert.deepEqual(more, ["second"]);
    assert.equal(got.length, 2); // nothing repeated on the first channel by the reopen
  } finally {
    client.close();
  }
});
