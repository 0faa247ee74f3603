"""Every machine-readable code roomcast answers with, defined once for the server and the client.

``ErrorCode``: the ``code`` of error frames on the WebSocket, of HTTP API error bodies and of
refused handshakes (also the label of the rejection metrics). ``CloseCode``: the WebSocket close
codes the server sends and the client acts on. ``RecoveryStatus``: what a resume with ``since``
came to (the join scripts in :mod:`roomcast.broker.scripts` return the same strings; a unit test
ties them together).
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final


class ErrorCode(StrEnum):
    # Error frames: the frame is refused, the connection stays open.
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    INVALID_FRAME = "invalid_frame"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_ROOM = "invalid_room"
    INVALID_USERNAME = "invalid_username"
    INVALID_TEXT = "invalid_text"
    INVALID_SINCE = "invalid_since"
    INVALID_LIMIT = "invalid_limit"
    NOT_JOINED = "not_joined"
    TOO_MANY_ROOMS = "too_many_rooms"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"  # Redis is down: a message was NOT published and never will be
    # A message's reply from Redis was lost and its fate could not be learnt: it may or may not
    # have been published (if it was, every member gets it like any other message).
    UNCONFIRMED = "unconfirmed"
    INVALID_TOKEN = "invalid_token"  # a refresh's token: not a string, or refused
    BANNED = "banned"  # a join while the application bans this user from the room
    INVALID_ROOM_TOKEN = "invalid_room_token"  # a join's room token: refused (see reason)
    # Rejections that close the connection instead of answering with an error frame.
    BINARY_FRAME = "binary_frame"
    FRAME_TOO_BIG = "frame_too_big"
    FLOOD = "flood"
    SLOW_CONSUMER = "slow_consumer"
    PROTOCOL_VIOLATION = "protocol_violation"
    TOO_MANY_FRAGMENTS = "too_many_fragments"
    # (and TOKEN_EXPIRED, below: the connection's token ran out without a refresh)
    # Refused handshakes and HTTP API credentials (401/403).
    ORIGIN = "origin"
    TOKEN_MISSING = "token_missing"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"
    TOKEN_AUDIENCE = "token_audience"
    TOKEN_ISSUER = "token_issuer"
    TOKEN_SIGNATURE = "token_signature"
    TOKEN_INVALID = "token_invalid"
    TOKEN_NAME = "token_name"
    API_KEY_INVALID = "api_key_invalid"
    # Not a code of its own: how the reason of an invalid_token (refresh) or invalid_room_token
    # begins on a node that verifies no tokens.
    TOKENS_OFF = "tokens_off"
    # Handshakes refused with 400 before anything reads them.
    DUPLICATE_HEADER = "duplicate_header"
    MALFORMED_HEADER = "malformed_header"
    MALFORMED_QUERY = "malformed_query"
    DUPLICATE_TOKEN = "duplicate_token"
    MALFORMED_REQUEST = "malformed_request"
    # HTTP API requests.
    INVALID_REQUEST = "invalid_request"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405, with the methods the path answers
    NOT_IN_HISTORY = "not_in_history"  # a deleted offset the room's history no longer holds
    INVALID_CURSOR = "invalid_cursor"
    INVALID_USER = "invalid_user"
    INVALID_BODY = "invalid_body"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    INTERNAL_ERROR = "internal_error"
    # The application's hooks (README "Hooks"): its verdicts, and a hook that did not answer.
    JOIN_DENIED = "join_denied"  # error frame: the join hook said no (its reason is shown)
    PUBLISH_DENIED = "publish_denied"  # error frame: the publish hook refused the message
    CONNECT_DENIED = "connect_denied"  # handshake 403: the connect hook refused the client
    HOOK_UNAVAILABLE = "hook_unavailable"  # a fail-closed hook failed (error frame, or 503)


class CloseCode(IntEnum):
    """RFC 6455 §7.4.1 codes, by what roomcast means with them."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the node drains: reconnect (to another node)
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # a binary frame
    ABNORMAL = 1006  # never sent: the connection just died
    INVALID_DATA = 1007  # text that is not UTF-8
    POLICY_VIOLATION = 1008  # flooding past the rate limits
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # a slow consumer: resume with `since`
    # 4000-4999: the application's own (RFC 6455 §7.4.2).
    TOKEN_EXPIRED = 4001  # the token ran out (exp + leeway) without a refresh: reconnect
    DISCONNECTED = 4002  # the application disconnected this user (server API): may reconnect
    DISCONNECTED_FOR_GOOD = 4003  # the application disconnected this user: do not reconnect


# Closed for the client's own fault: retrying the same thing would only be closed again.
FATAL_CLOSE_CODES: Final = frozenset(
    {
        CloseCode.UNSUPPORTED_DATA,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.DISCONNECTED_FOR_GOOD,  # not a fault, but an order: stop
    }
)


class RecoveryStatus(StrEnum):
    """How a join (or an event stream) with ``since`` resumed."""

    RECOVERED = "recovered"  # every missed message follows, then live
    EPOCH_CHANGED = "epoch_changed"  # the room's history was lost (Redis restarted empty)
    TOO_OLD = "too_old"  # the missed messages left history (size or age)
    OVERLOADED = "overloaded"  # the room outran the catch-up buffer: reload history
    NOT_REQUESTED = "not_requested"  # no `since`: live from the join on


class LossReason(StrEnum):
    """Why a ``loss`` event says acknowledged messages will never reach a live connection."""

    EPOCH_CHANGED = "epoch_changed"  # Redis lost the room's history (restarted empty)
    TOO_OLD = "too_old"  # the missed offsets are no longer in the room's history
    UNAVAILABLE = "unavailable"  # Redis could not be read back in time to fill the gap
