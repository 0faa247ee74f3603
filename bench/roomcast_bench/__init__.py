"""roomcast's benchmark: a multi-process WebSocket load generator and the scenarios of issue 7."""
