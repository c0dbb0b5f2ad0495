"""Front doors as pure translations: an inbound request -> the canonical chat request, canonical chunks ->
the front door's own events. No storage, metering, auth or http here."""
