import sys

from roomcast_bench.cli import main

sys.exit(main())
