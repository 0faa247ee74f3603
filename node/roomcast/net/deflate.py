"""What the node offers of permessage-deflate (RFC 7692), when ``ROOMCAST_COMPRESSION`` is on.

With context takeover, each compressed connection keeps a zlib compressor and decompressor
between messages, for its whole life. At zlib's defaults (a 32 KiB window, memLevel 8) the
compressor alone is ~256 KiB: ~320 KiB of node memory per connection once it was sent a few
large messages, against ~2 KiB for an uncompressed one, and one address holds 256 WebSockets
through nginx (tests/adversarial/test_redteam19_deflate_state.py). 4 KiB windows both ways and
memLevel 5, what websockets' own server negotiates by default, keep ~40 KiB; chat messages
compress nearly as well within 4 KiB.
"""

from __future__ import annotations

from typing import Final

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

# 2 ** 12 = 4 KiB of LZ77 window: the compressor keeps ~4 x the window + 2 ** (memLevel + 9).
WINDOW_BITS: Final = 12
MEM_LEVEL: Final = 5


def server_deflate() -> ServerPerMessageDeflateFactory:
    """The extension to accept. A client that cannot be held to a small window (its offer
    lacks ``client_max_window_bits``; every browser sends it) is served uncompressed rather
    than with a 32 KiB decompressor of the node's."""
    return ServerPerMessageDeflateFactory(
        server_max_window_bits=WINDOW_BITS,
        client_max_window_bits=WINDOW_BITS,
        compress_settings={"memLevel": MEM_LEVEL},
        require_client_max_window_bits=True,
    )
