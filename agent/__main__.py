"""`python -m superstatic_agent ...`: the same as the `superstatic-agent` console script."""

import sys

from superstatic_agent.cli import main

sys.exit(main())
