"""The OpenAI Responses API (`POST /v1/responses`) as a dialect over the canonical chat flow."""
