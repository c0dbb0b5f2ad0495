"""Channels: upstream key pools with shared states, auto-disable, health probes."""
