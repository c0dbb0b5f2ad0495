"""Credential masking of upstream text: shapes, configured keys, at most the last four characters kept."""

from __future__ import annotations

import pytest

from sluice.errors import UpstreamAuthFailed, UpstreamRejected, error_for_upstream_status
from sluice.redact import mask, register


@pytest.mark.parametrize(("text", "secret", "kept"), [
    ("Incorrect API key provided: sk-proj-abcdefghijklmnop1234.", "sk-proj-abcdefghijklmnop1234", "***1234"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sigXYZW", "eyJhbGciOiJIUzI1NiJ9", "***XYZW"),
    ("bad key AIzaSyA1234567890abcdefghijkl", "AIzaSyA1234567890", "***ijkl"),
    ('{"api_key": "hunter2hunter2"}', "hunter2hunter2", "***ter2"),
    ("x-api-key: sk-ant-api03-Zzzzzzzzzzzzzzzz9876", "Zzzzzzzzzzzzzzzz", "***9876"),
])
def test_credential_shapes_are_masked(text: str, secret: str, kept: str) -> None:
    out = mask(text)
    assert secret not in out and kept in out


def test_a_configured_key_of_any_shape_is_masked_and_plain_text_is_left_alone() -> None:
    register("plainSecretWithoutPrefix42")
    assert mask("echo plainSecretWithoutPrefix42 back") == "echo ***ix42 back"
    assert mask("The model `gpt-4o` does not exist") == "The model `gpt-4o` does not exist"
    assert mask("short key=abc") == "short key=abc"


def test_the_error_boundary_masks_and_words_auth_failures_for_the_customer() -> None:
    err = error_for_upstream_status(400, "bad request from sk-live-00000000000000001111")
    assert isinstance(err, UpstreamRejected) and err.message == "bad request from ***1111"
    for status in (401, 403):
        auth = error_for_upstream_status(status, "Incorrect API key provided: sk-abc")
        assert isinstance(auth, UpstreamAuthFailed) and auth.status == 502 and "sk-" not in auth.message
        assert auth.retryable and not auth.retry_same_target
