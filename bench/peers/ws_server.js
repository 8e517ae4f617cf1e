// Node peer 1: the `ws` library with Redis, one subscriber connection per process.
//
// Same semantics as bench/servers/ceiling.py and the tutorial's /ws/global/{channel}: a
// {"content": C} frame from any member reaches every member on every instance as
// {"content": C, "channel": ch}. The frame is encoded once per message per process (the string
// published to Redis is the frame itself) and handed to each local socket with ws.send(), the way
// the ws README broadcasts. One PUBLISH connection and one SUBSCRIBE connection per process;
// a channel is subscribed when its first local member joins and unsubscribed when its last leaves.
"use strict";

const http = require("node:http");
const { WebSocketServer } = require("ws");
const { createClient } = require("redis");

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const PREFIX = "bench:";
const TEXT = { binary: false }; // Redis hands over a Buffer; it holds UTF-8 JSON, so send it as text

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);

  const rooms = new Map(); // channel -> {members: Set<WebSocket>, listener}

  const server = http.createServer((req, res) => {
    res.writeHead(404).end();
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  server.on("upgrade", (req, socket, head) => {
    const match = /^\/ws\/global\/([\w.-]{1,64})$/.exec(req.url);
    if (match === null) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => join(ws, match[1]));
  });

  function join(ws, channel) {
    let room = rooms.get(channel);
    if (room === undefined) {
      const members = new Set();
      const listener = (frame) => {
        for (const member of members) member.send(frame, TEXT);
      };
      room = { members, listener };
      rooms.set(channel, room);
      sub.subscribe(PREFIX + channel, listener, true);
    }
    room.members.add(ws);
    ws.on("message", (data) => {
      let content;
      try {
        content = JSON.parse(data).content;
      } catch {
        ws.close(1003, "invalid JSON");
        return;
      }
      pub.publish(PREFIX + channel, JSON.stringify({ content, channel }));
    });
    ws.on("close", () => {
      room.members.delete(ws);
      if (room.members.size === 0) {
        rooms.delete(channel);
        sub.unsubscribe(PREFIX + channel, room.listener, true);
      }
    });
  }

  server.listen(port, "127.0.0.1");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
