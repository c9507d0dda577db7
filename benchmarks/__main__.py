"""`python -m superstatic_bench` runs the suite like `superstatic bench`."""

import sys

from superstatic_bench.cli import main

sys.exit(main(sys.argv[1:]))
