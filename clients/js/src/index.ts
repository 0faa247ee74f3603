// roomcast-client: a browser and Node.js client for roomcast.
//
//   import { RoomcastClient } from "roomcast-client";
//   const client = new RoomcastClient("wss://chat.example.com/chat", "ann", { rooms: ["general"] });
//   client.on("message", (m) => console.log(m.username, m.text));
//   client.start();
//   const { offset } = await client.send("general", "hello");

export { Backoff, type BackoffOptions } from "./backoff.js";
export { RoomcastClient, type ClientOptions, type PendingMessage, type TokenSource } from "./client.js";
export { CloseCode, ErrorCode, FATAL_CLOSE_CODES, FATAL_HTTP_STATUSES, LossReason, RecoveryStatus } from "./codes.js";
export { RoomCursor, type Since } from "./cursor.js";
export { ClientClosedError, JoinError, RequestError, TimeoutError } from "./errors.js";
export * from "./events.js";
export { Outgoing, SendError, type Delivered, type OutgoingStatus } from "./outgoing.js";
export type { WebSocketConstructor, WebSocketLike } from "./socket.js";
export { parseTokenAnswer, tokenFromUrl, type TokenUrlOptions } from "./tokens.js";
