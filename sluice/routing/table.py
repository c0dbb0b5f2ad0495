"""The model table: each public model name or pattern maps to targets in priority tiers, weighted within a tier."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from sluice.config import ModelConfig, ProviderConfig
from sluice.providers.base import Timeouts
from sluice.routing.patterns import candidates, is_pattern, match, public_name, upstream_name


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
    rule: str | None = None    # the pattern this route was made from, if any

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
    """Exact names first (also with a rule's suffix stripped), then patterns in the order they were
    declared; a pattern's route is built for the requested name and kept in a bounded cache."""

    _CACHE_MAX = 4096

    def __init__(self, models: list[ModelConfig], providers: list[ProviderConfig]) -> None:
        pcfg = {p.name: p for p in providers}
        self._routes: dict[str, Route] = {}
        self._strip: dict[str, list[str]] = {}
        self._patterns: list[tuple[str, Route, list[str]]] = []
        self._cache: dict[str, Route | None] = {}
        for m in models:
            by_prio: dict[int, list[Target]] = {}
            for t in m.targets:
                to = pcfg[t.provider].timeouts
                by_prio.setdefault(t.priority, []).append(
                    Target(t.provider, t.model, t.weight, t.priority, Timeouts(to.connect, to.first_byte, to.idle,
                                                                        to.total)))
            route = Route(m.name, m.owned_by, [by_prio[p] for p in sorted(by_prio)])
            if is_pattern(m.name):
                self._patterns.append((m.name, route, m.strip_suffixes))
            else:
                self._routes[m.name] = route
                self._strip[m.name] = m.strip_suffixes

    def get(self, name: str) -> Route | None:
        route = self._routes.get(name)
        if route is not None or not (self._patterns or any(self._strip.values())):
            return route
        if name in self._cache:
            return self._cache[name]
        found = self._resolve(name)
        if len(self._cache) >= self._CACHE_MAX:
            self._cache.clear()  # names come from clients: never let them grow the cache without bound
        self._cache[name] = found
        return found

    def _resolve(self, name: str) -> Route | None:
        for exact, strip in self._strip.items():
            if strip and exact in candidates(name, strip):
                return self._routes[exact]
        for pattern, rule, strip in self._patterns:
            for cand in candidates(name, strip):
                star = match(pattern, cand)
                if star is not None:
                    tiers = [[replace(t, model=upstream_name(t.model, cand, star)) for t in tier]
                             for tier in rule.tiers]
                    return Route(name, rule.owned_by, tiers, rule=pattern)
        return None

    def names(self) -> list[str]:
        """The exact public names (patterns are listed through what the upstreams offer: `listed`)."""
        return list(self._routes)

    def listed(self, offered: dict[str, list[str]]) -> list[str]:
        """Public names the patterns make of the upstreams' own model lists (provider -> model ids)."""
        out: dict[str, None] = {}
        for pattern, rule, _ in self._patterns:
            for tier in rule.tiers:
                for t in tier:
                    for upstream_id in offered.get(t.provider, ()):
                        public = public_name(pattern, t.model, upstream_id)
                        if public is not None and public not in self._routes:
                            out[public] = None
        return list(out)

    def pattern_providers(self) -> set[str]:
        return {t.provider for _, rule, _ in self._patterns for tier in rule.tiers for t in tier}
