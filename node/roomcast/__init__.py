"""roomcast: horizontally scalable WebSocket chat rooms."""

__version__ = "0.1.0"
