"""Sluice benchmark harness (not tests): fake upstream, load generator, report. Run `python -m bench`."""
