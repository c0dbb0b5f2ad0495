"""Google Gemini (`generateContent` / `streamGenerateContent?alt=sse`) behind the OpenAI chat contract."""

from sluice.providers.gemini.adapter import GeminiProvider

__all__ = ["GeminiProvider"]
