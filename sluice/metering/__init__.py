"""Metering: admission (a ticket), the ledger record assembled from a request's values, token estimation,
the batched ledger writer."""
