"""Entry point: `python -m bench` runs the benchmark (see bench/README.md)."""

import sys

from bench.cli import main

sys.exit(main())
