"""Metering: token estimation, the per-request meter (finalises exactly once), the batched ledger writer."""
