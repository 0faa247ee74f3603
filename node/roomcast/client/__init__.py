"""An asyncio client for roomcast that reconnects and resumes without losing or repeating.

async with RoomcastClient("ws://127.0.0.1:8080/chat", "ann", rooms=["general"]) as client:
    await client.send("general", "hello")
    async for event in client:
        if isinstance(event, ChatMessage):
            print(event.username, event.text)
"""

from roomcast.client.backoff import Backoff
from roomcast.client.core import RoomcastClient, TokenSource
from roomcast.client.cursor import RoomCursor
from roomcast.client.errors import ClientClosedError, JoinError
from roomcast.client.events import (
    Ack,
    Banned,
    ChatMessage,
    ClientEvent,
    Closed,
    Connected,
    Disconnect,
    Disconnected,
    Error,
    Event,
    Gap,
    History,
    HistoryCleared,
    Joined,
    Left,
    Loss,
    Member,
    MessageDeleted,
    Presence,
    PresenceChanged,
    Reconnecting,
    Refreshed,
    Rejoining,
    Removed,
    Resumed,
    SendFailed,
    ServerEvent,
    TokenExpiring,
    Typing,
    Unknown,
    UserJoined,
    UserLeft,
    Welcome,
    parse_event,
)
from roomcast.client.outgoing import Outgoing, SendError, SendUnconfirmed
from roomcast.client.tokens import TokenUrlError, token_from_url

__all__ = [
    "Ack",
    "Backoff",
    "Banned",
    "ChatMessage",
    "ClientClosedError",
    "ClientEvent",
    "Closed",
    "Connected",
    "Disconnect",
    "Disconnected",
    "Error",
    "Event",
    "Gap",
    "History",
    "HistoryCleared",
    "JoinError",
    "Joined",
    "Left",
    "Loss",
    "Member",
    "MessageDeleted",
    "Outgoing",
    "Presence",
    "PresenceChanged",
    "Reconnecting",
    "Refreshed",
    "Rejoining",
    "Removed",
    "Resumed",
    "RoomCursor",
    "RoomcastClient",
    "SendError",
    "SendFailed",
    "SendUnconfirmed",
    "ServerEvent",
    "TokenExpiring",
    "TokenSource",
    "TokenUrlError",
    "Typing",
    "Unknown",
    "UserJoined",
    "UserLeft",
    "Welcome",
    "parse_event",
    "token_from_url",
]
