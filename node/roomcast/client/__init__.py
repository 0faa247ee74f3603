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
    ChatMessage,
    ClientEvent,
    Closed,
    Connected,
    Disconnected,
    Error,
    Event,
    Gap,
    History,
    Joined,
    Left,
    Loss,
    Member,
    Presence,
    Reconnecting,
    Refreshed,
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

__all__ = [
    "Ack",
    "Backoff",
    "ChatMessage",
    "ClientClosedError",
    "ClientEvent",
    "Closed",
    "Connected",
    "Disconnected",
    "Error",
    "Event",
    "Gap",
    "History",
    "JoinError",
    "Joined",
    "Left",
    "Loss",
    "Member",
    "Outgoing",
    "Presence",
    "Reconnecting",
    "Refreshed",
    "Resumed",
    "RoomCursor",
    "RoomcastClient",
    "SendError",
    "SendFailed",
    "SendUnconfirmed",
    "ServerEvent",
    "TokenExpiring",
    "TokenSource",
    "Typing",
    "Unknown",
    "UserJoined",
    "UserLeft",
    "Welcome",
    "parse_event",
]
