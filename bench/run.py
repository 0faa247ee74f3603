#!/usr/bin/env python3
"""Entry point: ``.venv/bin/python bench/run.py [--smoke] [options]`` (see bench/README.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from roomcast_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
