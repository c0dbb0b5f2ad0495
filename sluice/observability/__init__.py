"""What Sluice tells an operator about itself: Prometheus metrics, the access log, the log setup."""
