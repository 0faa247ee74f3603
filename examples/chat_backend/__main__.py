"""``python -m examples.chat_backend``: serve the example backend (settings: CHAT_BACKEND_*)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from examples.chat_backend.config import ConfigError, load_config
from examples.chat_backend.web import ChatBackend


def main() -> int:
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"chat_backend: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = ChatBackend(config).app()
    uvicorn.run(app, host=config.host, port=config.port, log_level="info", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
