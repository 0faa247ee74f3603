// Every code the server answers with, as in node/roomcast/wire/codes.py (the server's one
// definition). tests/unit/test_js_client_codes.py fails if the two lists differ.

/** The `code` of `error` frames (the connection stays open) and of refused handshakes. */
export const ErrorCode = {
  INVALID_UTF8: "invalid_utf8",
  INVALID_JSON: "invalid_json",
  INVALID_FRAME: "invalid_frame",
  UNKNOWN_TYPE: "unknown_type",
  INVALID_ROOM: "invalid_room",
  INVALID_USERNAME: "invalid_username",
  INVALID_TEXT: "invalid_text",
  INVALID_SINCE: "invalid_since",
  INVALID_LIMIT: "invalid_limit",
  NOT_JOINED: "not_joined",
  TOO_MANY_ROOMS: "too_many_rooms",
  FORBIDDEN: "forbidden",
  RATE_LIMITED: "rate_limited",
  UNAVAILABLE: "unavailable",
  UNCONFIRMED: "unconfirmed",
  INVALID_TOKEN: "invalid_token",
  BANNED: "banned",
  INVALID_ROOM_TOKEN: "invalid_room_token",
  BINARY_FRAME: "binary_frame",
  FRAME_TOO_BIG: "frame_too_big",
  FLOOD: "flood",
  SLOW_CONSUMER: "slow_consumer",
  PROTOCOL_VIOLATION: "protocol_violation",
  TOO_MANY_FRAGMENTS: "too_many_fragments",
  ORIGIN: "origin",
  TOKEN_MISSING: "token_missing",
  TOKEN_EXPIRED: "token_expired",
  TOKEN_NOT_YET_VALID: "token_not_yet_valid",
  TOKEN_AUDIENCE: "token_audience",
  TOKEN_ISSUER: "token_issuer",
  TOKEN_SIGNATURE: "token_signature",
  TOKEN_INVALID: "token_invalid",
  TOKEN_NAME: "token_name",
  API_KEY_INVALID: "api_key_invalid",
  TOKENS_OFF: "tokens_off",
  DUPLICATE_HEADER: "duplicate_header",
  MALFORMED_HEADER: "malformed_header",
  MALFORMED_QUERY: "malformed_query",
  DUPLICATE_TOKEN: "duplicate_token",
  MALFORMED_REQUEST: "malformed_request",
  INVALID_REQUEST: "invalid_request",
  NOT_FOUND: "not_found",
  METHOD_NOT_ALLOWED: "method_not_allowed",
  NOT_IN_HISTORY: "not_in_history",
  INVALID_CURSOR: "invalid_cursor",
  INVALID_USER: "invalid_user",
  INVALID_BODY: "invalid_body",
  UNSUPPORTED_MEDIA_TYPE: "unsupported_media_type",
  INTERNAL_ERROR: "internal_error",
  JOIN_DENIED: "join_denied",
  PUBLISH_DENIED: "publish_denied",
  CONNECT_DENIED: "connect_denied",
  HOOK_UNAVAILABLE: "hook_unavailable",
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** WebSocket close codes (RFC 6455 §7.4.1) by what roomcast means with them. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  ABNORMAL: 1006,
  INVALID_DATA: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  TRY_AGAIN_LATER: 1013,
  /** The token ran out (exp + leeway) without a `refresh`: reconnect with a fresh one. */
  TOKEN_EXPIRED: 4001,
  /** The application disconnected this user (server API): reconnecting is allowed. */
  DISCONNECTED: 4002,
  /** The application disconnected this user and said not to come back: the client stops. */
  DISCONNECTED_FOR_GOOD: 4003,
} as const;
export type CloseCode = (typeof CloseCode)[keyof typeof CloseCode];

/** Closed for the client's own fault: reconnecting would only be closed again. */
export const FATAL_CLOSE_CODES: ReadonlyMap<number, string> = new Map([
  [CloseCode.UNSUPPORTED_DATA, "the server refused a binary frame"],
  [CloseCode.INVALID_DATA, "the server received invalid UTF-8"],
  [CloseCode.POLICY_VIOLATION, "too many frames were sent (flood protection)"],
  [CloseCode.MESSAGE_TOO_BIG, "a frame was over the server's size limit"],
  [CloseCode.DISCONNECTED_FOR_GOOD, "the application disconnected you"],
]);

/** Handshake statuses that mean "these credentials will not do": retrying cannot help. */
export const FATAL_HTTP_STATUSES: ReadonlySet<number> = new Set([401, 403]);

/**
 * A node over its admission rate refuses new handshakes with 503 and `Retry-After` (at least 1 s),
 * an address over its own handshake rate with 429 and `Retry-After` (at least 1 s).
 * The WebSocket API hides the header (and browsers even the status), so where the status is seen
 * (Node.js with `ws`) the client waits the shortest Retry-After a node gives, plus full jitter.
 */
export const BUSY_HTTP_STATUS = 503;
export const BUSY_HTTP_STATUSES: ReadonlySet<number> = new Set([429, 503]);
export const BUSY_RETRY_MS = 1000;

/**
 * Refusals of a join that pass by themselves (a join bucket refills, the application's join hook
 * comes back): the client's own join of a room it keeps is sent again later, on the same connection.
 */
export const RETRIED_JOIN_ERRORS: ReadonlySet<string> = new Set([ErrorCode.RATE_LIMITED, ErrorCode.HOOK_UNAVAILABLE]);

/** How a join with `since` resumed (`joined.reason` when `recovered` is false). */
export const RecoveryStatus = {
  RECOVERED: "recovered",
  EPOCH_CHANGED: "epoch_changed",
  TOO_OLD: "too_old",
  OVERLOADED: "overloaded",
  NOT_REQUESTED: "not_requested",
} as const;
export type RecoveryStatus = (typeof RecoveryStatus)[keyof typeof RecoveryStatus];

/** Why a `loss` event says acknowledged messages will never reach a live connection. */
export const LossReason = {
  EPOCH_CHANGED: "epoch_changed",
  TOO_OLD: "too_old",
  UNAVAILABLE: "unavailable",
} as const;
export type LossReason = (typeof LossReason)[keyof typeof LossReason];
