"""The canonical OpenAI-compatible shapes Sluice reads and writes (request fields, chunks, usage, models)."""
