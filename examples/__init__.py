"""Example applications built on roomcast (not part of the shipped package)."""
