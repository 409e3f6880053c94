/**
 * The raw WebSocket ceiling's relay, run as its own Node process (as the
 * edge is its own process): it accepts a sender (?role=send) and a receiver
 * (?role=recv) per path and passes frames across, acknowledgements back.
 * Prints its port on stdout. Loopback only.
 */
import { WebSocketServer, type WebSocket } from "ws";

const rooms = new Map<string, { send?: WebSocket; recv?: WebSocket }>();
const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, maxPayload: 64 * 1024 * 1024 });

wss.on("connection", (ws, req) => {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  const role = url.searchParams.get("role") === "send" ? "send" : "recv";
  const room = rooms.get(url.pathname) ?? {};
  room[role] = ws;
  rooms.set(url.pathname, room);
  ws.on("message", (data, isBinary) => {
    const peer = role === "send" ? room.recv : room.send;
    peer?.send(data, { binary: isBinary });
  });
  ws.on("close", () => {
    if (room[role] === ws) delete room[role];
  });
});

wss.on("listening", () => {
  const addr = wss.address();
  process.stdout.write(`${typeof addr === "object" && addr ? addr.port : addr}\n`);
});
