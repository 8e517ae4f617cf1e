// Node peer 2: socket.io 4 with @socket.io/redis-adapter, set up as its documentation shows.
//
// The same events as bench/servers/socketio_server.py: a client emits "join" with a room name and
// "publish" with {channel, content}; the server emits "message" {content, channel} to the room on
// every instance. WebSocket transport only, as the benchmark's client speaks it.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({ transports: ["websocket"], perMessageDeflate: false, adapter: createAdapter(pub, sub) });
  io.on("connection", (socket) => {
    socket.on("join", (room) => socket.join(String(room)));
    socket.on("publish", (data) => {
      if (data && typeof data.channel === "string") {
        io.to(data.channel).emit("message", { content: data.content, channel: data.channel });
      }
    });
  });
  const server = http.createServer();
  io.attach(server);
  server.listen(port, "127.0.0.1");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
