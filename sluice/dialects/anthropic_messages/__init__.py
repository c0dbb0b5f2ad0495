"""Anthropic's Messages API as a front door (`/v1/messages`, count_tokens, model discovery): the checked
request -> canonical, canonical chunks -> Anthropic events, errors in Anthropic's envelope. `wire.py` is the
format's vocabulary, shared with the Anthropic provider that speaks it upstream."""
