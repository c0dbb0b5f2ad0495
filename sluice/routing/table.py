"""The model table: each public model name maps to targets in priority tiers, weighted within a tier."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sluice.config import ModelConfig, ProviderConfig
from sluice.providers.base import Timeouts


@dataclass(slots=True, frozen=True)
class Target:
    provider: str
    model: str
    weight: int
    priority: int
    timeouts: Timeouts


@dataclass(slots=True)
class Route:
    name: str
    owned_by: str
    tiers: list[list[Target]]  # ascending priority; try tier 0 first

    def order(self, rng: random.Random | None = None) -> list[Target]:
        """Targets in the order to try: tier by tier, weighted-random within a tier."""
        r = rng or random
        out: list[Target] = []
        for tier in self.tiers:
            if len(tier) == 1:
                out.extend(tier)
                continue
            pool = [t for t in tier if t.weight > 0]
            while pool:
                pick = r.choices(pool, weights=[t.weight for t in pool])[0]
                out.append(pick)
                pool.remove(pick)
        return out


class ModelTable:
    def __init__(self, models: list[ModelConfig], providers: list[ProviderConfig]) -> None:
        pcfg = {p.name: p for p in providers}
        self._routes: dict[str, Route] = {}
        for m in models:
            by_prio: dict[int, list[Target]] = {}
            for t in m.targets:
                to = pcfg[t.provider].timeouts
                by_prio.setdefault(t.priority, []).append(
                    Target(t.provider, t.model, t.weight, t.priority, Timeouts(to.connect, to.first_byte, to.idle,
                                                                        to.total)))
            self._routes[m.name] = Route(m.name, m.owned_by, [by_prio[p] for p in sorted(by_prio)])

    def get(self, name: str) -> Route | None:
        return self._routes.get(name)

    def names(self) -> list[str]:
        return list(self._routes)
