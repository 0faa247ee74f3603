// A room member on Node.js's `ws` (permessage-deflate offered as it offers it by default):
// prints the agreed extensions, then each event it reads as one JSON line, until it has read
// `count` messages from `sender`. Usage: node deflate_member.mjs <ws module> <url> <room> <count>
const [wsModule, url, room, count] = process.argv.slice(2);
const { default: WebSocket } = await import(wsModule);
const ws = new WebSocket(url);
let read = 0;
ws.on("open", () => {
  console.log(JSON.stringify({ type: "extensions", value: ws.extensions }));
  ws.send(JSON.stringify({ type: "join", room, username: "node-member" }));
});
ws.on("message", (data) => {
  const event = JSON.parse(data.toString("utf8"));
  console.log(JSON.stringify(event));
  if (event.type === "message" && event.username === "sender" && ++read === Number(count)) {
    ws.close(1000);
  }
});
ws.on("close", (code) => {
  console.log(JSON.stringify({ type: "closed", code }));
  process.exit(0);
});
ws.on("error", (err) => {
  console.log(JSON.stringify({ type: "failed", reason: String(err) }));
  process.exit(1);
});
