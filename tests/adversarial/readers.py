"""A connection of an attacking address that joined a room and reads (and drops) every byte
it is sent: the history-read attacks' reader."""

from __future__ import annotations

import asyncio

from tests.adversarial.rawws import handshake_request, open_socket, read_head, text


class Reader:
    """A connection of the attacking address, joined, reading (and dropping) every byte."""

    def __init__(self, writer: asyncio.StreamWriter, dropping: asyncio.Task[None]) -> None:
        self.writer, self.dropping = writer, dropping

    @classmethod
    async def open(cls, port: int, room: str, received: list[int]) -> Reader:
        reader, writer = await open_socket("127.0.0.1", port)
        writer.write(handshake_request("127.0.0.1", port))
        status, head = await read_head(reader)
        assert status == 101, head
        writer.write(text({"type": "join", "room": room, "username": "reader"}))

        async def drop() -> None:
            while chunk := await reader.read(1 << 20):
                received.append(len(chunk))

        return cls(writer, asyncio.ensure_future(drop()))

    def close(self) -> None:
        self.writer.close()
        self.dropping.cancel()
