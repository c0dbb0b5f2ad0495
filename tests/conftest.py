"""Fixtures shared by every test: the OpenAI-compatible upstream simulator (its own thread, one per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.sim.openai_sim import ThreadedSim


@pytest.fixture(scope="session")
def sim() -> Iterator[ThreadedSim]:
    with ThreadedSim() as s:
        yield s
