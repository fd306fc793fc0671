"""Diversity management: coverage counts over domain x content type x style x complexity, and a
deterministic planner that always picks the least-covered choices next.

The plan is a pure function of (graph, vocabularies, seed, prior coverage), so every machine of a
sharded run computes the same global sequence and takes its own slice, and a resumed run sees the
same items it planned before it was killed.
"""

import random
from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from sutra.synth.graph import KnowledgeGraph


@dataclass(frozen=True)
class PlannedItem:
    index: int
    concept_id: str
    content_type: str
    style: str


class Coverage:
    """Counts of the marginals and pairs the planner balances."""

    def __init__(self, counts: dict | None = None):
        self.counts = Counter(counts or {})

    @staticmethod
    def keys(domain: str, concept_id: str | None, complexity: int, content_type: str, style: str | None) -> list[str]:
        keys = [f"domain={domain}", f"complexity={complexity}", f"content_type={content_type}", f"domain|content_type={domain}|{content_type}"]
        if concept_id:
            keys.append(f"concept={concept_id}")
        if style:
            keys += [f"style={style}", f"content_type|style={content_type}|{style}"]
        return keys

    def add(self, *args) -> None:
        self.counts.update(self.keys(*args))

    def __getitem__(self, key: str) -> int:
        return self.counts[key]


class Planner:
    def __init__(self, graph: KnowledgeGraph, content_types: list[str], styles: list[str], seed: int, prior: Coverage | None = None):
        self.graph, self.content_types, self.styles, self.seed = graph, content_types, styles, seed
        self.coverage = Coverage(prior.counts if prior else None)
        self.by_domain: dict[str, list] = {}
        for concept in graph.curriculum():
            self.by_domain.setdefault(concept.domain, []).append(concept)

    def _least(self, options: list, score, rng: random.Random):
        best = min(score(o) for o in options)
        return rng.choice([o for o in options if score(o) == best])

    def items(self) -> Iterator[PlannedItem]:
        """The infinite global plan: each item takes the least-covered domain, then concept (and its
        complexity), content type within that domain, and style within that content type."""
        index = 0
        c = self.coverage
        rng = random.Random(self.seed)  # tie-breaks only; the sequence always starts from index 0
        while True:
            domain = self._least(sorted(self.by_domain), lambda d: c[f"domain={d}"], rng)
            concept = self._least(self.by_domain[domain], lambda k: (c[f"concept={k.id}"], c[f"complexity={k.complexity}"]), rng)
            content_type = self._least(self.content_types, lambda t: (c[f"domain|content_type={domain}|{t}"], c[f"content_type={t}"]), rng)
            style = self._least(self.styles, lambda s: (c[f"content_type|style={content_type}|{s}"], c[f"style={s}"]), rng)
            c.add(domain, concept.id, concept.complexity, content_type, style)
            yield PlannedItem(index, concept.id, content_type, style)
            index += 1


def prior_coverage(records, graph: KnowledgeGraph) -> Coverage:
    """Coverage of existing 13-field records (style is not a schema field, so it is not counted)."""
    ids_by_name = {c.name: c.id for c in graph.concepts.values()}
    coverage = Coverage()
    for record in records:
        coverage.add(record["domain"], ids_by_name.get(record["concept_name"]), record["complexity_level"], record["content_type"], None)
    return coverage
