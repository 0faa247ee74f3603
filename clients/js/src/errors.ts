// What RoomcastClient's methods throw (roomcast.client.errors in Python).

import type { ClosedEvent, ErrorEvent } from "./events.js";

/** The client stopped (`close()`, `disconnect()`, a fatal close code or refused credentials). */
export class ClientClosedError extends Error {
  override name = "ClientClosedError";
  readonly closed: ClosedEvent;

  constructor(closed: ClosedEvent) {
    super(closed.reason);
    this.closed = closed;
  }
}

/** The server refused a join (`forbidden`, `invalid_room`, `too_many_rooms`, ...). */
export class JoinError extends Error {
  override name = "JoinError";
  readonly error: ErrorEvent;

  constructor(error: ErrorEvent) {
    super(`join of ${JSON.stringify(error.room)} refused: ${error.code}: ${error.reason}`);
    this.error = error;
  }
}

/** The server refused a request (`history`, `presence`, `leave`): `error.code` says why. */
export class RequestError extends Error {
  override name = "RequestError";
  readonly error: ErrorEvent;

  constructor(error: ErrorEvent) {
    super(`${error.code}: ${error.reason}`);
    this.error = error;
  }
}

/** No answer in time. */
export class TimeoutError extends Error {
  override name = "TimeoutError";
}

/** The connection a request was sent on ended before its answer came (retried internally). */
export class LinkLost extends Error {
  override name = "LinkLost";
}
