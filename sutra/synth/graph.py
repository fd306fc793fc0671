"""The knowledge graph that drives generation: concepts, their levels and their links.

A graph file (YAML or JSON) holds `concepts:`, a list of
    {id, name, domain, complexity (1-10), prerequisites: [ids], builds_to: [ids], cross_domain: [ids]}.
Prerequisite and builds-to edges both mean "comes before" and must form no cycle; cross-domain
links are symmetric associations and may form cycles.
"""

import hashlib
import heapq
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from sutra.errors import SutraError
from sutra.io import atomic_write_text, invalid_yaml, read_text_input

DOMAINS = (
    "Mathematics",
    "Science",
    "Programming & Systems",
    "Logic & Reasoning",
    "Engineering",
    "Applied Fields",
    "Language & Communication",
    "Social Sciences",
    "Humanities",
)
SEED_GRAPH = Path(__file__).with_name("seed_graph.yaml")
ID_PATTERN = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class Concept:
    id: str
    name: str
    domain: str
    complexity: int
    prerequisites: list[str] = field(default_factory=list)
    builds_to: list[str] = field(default_factory=list)
    cross_domain: list[str] = field(default_factory=list)
    description: str = ""


class KnowledgeGraph:
    def __init__(self, concepts: list[Concept], source: str = "<memory>"):
        self.source = source
        self.concepts: dict[str, Concept] = {}
        for concept in concepts:
            if concept.id in self.concepts:
                raise SutraError(f"{source}: concept id '{concept.id}' appears twice; ids must be unique")
            self.concepts[concept.id] = concept
        self.validate()

    # ---- loading and saving ------------------------------------------------------------

    @classmethod
    def load(cls, spec: str | Path) -> "KnowledgeGraph":
        """`default` is the seed graph shipped with Sutra; anything else is a .yaml/.yml/.json file."""
        path = SEED_GRAPH if str(spec) == "default" else Path(spec)
        text = read_text_input(path, "no such graph file; pass a .yaml or .json graph, or 'default' for the seed graph")
        try:
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError, RecursionError) as exc:  # RecursionError: nested too deeply
            raise SutraError(f"{invalid_yaml(path, exc)}; fix the graph file's syntax") from None
        if not isinstance(data, dict) or not isinstance(data.get("concepts"), list) or not data["concepts"]:
            raise SutraError(f"{path}: expected a mapping with a non-empty 'concepts' list at the top level")
        return cls([_concept_from_dict(entry, path, i) for i, entry in enumerate(data["concepts"])], str(path))

    def to_dict(self) -> dict:
        return {"concepts": [{k: v for k, v in asdict(c).items() if v or k == "complexity"} for c in self.concepts.values()]}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = self.to_dict()
        if path.suffix == ".json":
            atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        else:
            atomic_write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    # ---- validation and order ----------------------------------------------------------

    def validate(self) -> None:
        for concept in self.concepts.values():
            for relation in ("prerequisites", "builds_to", "cross_domain"):
                for target in getattr(concept, relation):
                    if target not in self.concepts:
                        raise SutraError(
                            f"{self.source}: concept '{concept.id}' lists unknown id '{target}' in {relation}; add that concept or remove the link"
                        )
                    if target == concept.id:
                        raise SutraError(f"{self.source}: concept '{concept.id}' lists itself in {relation}")
        cycle = self._find_cycle()
        if cycle:
            raise SutraError(f"{self.source}: prerequisite cycle {' -> '.join(cycle)}; a concept cannot (indirectly) require itself")

    def _successors(self) -> dict[str, set[str]]:
        """Edges 'must be learnt before': prerequisite -> concept and concept -> what it builds to."""
        after: dict[str, set[str]] = {cid: set() for cid in self.concepts}
        for concept in self.concepts.values():
            for pre in concept.prerequisites:
                after[pre].add(concept.id)
            after[concept.id].update(concept.builds_to)
        return after

    def _find_cycle(self) -> list[str] | None:
        after = self._successors()
        state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
        for root in sorted(self.concepts):
            if root in state:
                continue
            path, stack = [root], [iter(sorted(after[root]))]
            state[root] = 1
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    return path[path.index(nxt):] + [nxt]
                elif nxt not in state:
                    state[nxt] = 1
                    path.append(nxt)
                    stack.append(iter(sorted(after[nxt])))
        return None

    def curriculum(self) -> list[Concept]:
        """Every concept after everything it depends on; among those ready, lower complexity first."""
        after = self._successors()
        indegree = Counter(t for targets in after.values() for t in targets)
        ready = [(c.complexity, c.id) for c in self.concepts.values() if indegree[c.id] == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, cid = heapq.heappop(ready)
            order.append(self.concepts[cid])
            for nxt in after[cid]:
                indegree[nxt] -= 1
                if indegree[nxt] == 0:
                    heapq.heappush(ready, (self.concepts[nxt].complexity, nxt))
        return order

    def names(self, ids) -> list[str]:
        return [self.concepts[i].name for i in ids]

    def neighbourhood(self, cid: str) -> dict[str, list[str]]:
        """Names of what `cid` assumes, what it leads to (either edge direction) and its cross-domain links."""
        concept = self.concepts[cid]
        builds_to = dict.fromkeys(concept.builds_to + [o.id for o in self.concepts.values() if cid in o.prerequisites])
        cross = dict.fromkeys(concept.cross_domain + [o.id for o in self.concepts.values() if cid in o.cross_domain])
        return {
            "prerequisites": self.names(concept.prerequisites),
            "builds_to": self.names(builds_to),
            "cross_domain_connections": self.names(cross),
        }

    def stats(self) -> dict:
        concepts = list(self.concepts.values())
        by_domain = Counter(c.domain for c in concepts)
        return {
            "concepts": len(concepts),
            "domains_covered": sum(1 for d in DOMAINS if by_domain[d]),
            "by_domain": {d: by_domain[d] for d in DOMAINS},
            "by_complexity": {level: sum(1 for c in concepts if c.complexity == level) for level in range(1, 11)},
            "prerequisite_edges": sum(len(c.prerequisites) for c in concepts),
            "builds_to_edges": sum(len(c.builds_to) for c in concepts),
            "cross_domain_links": sum(len(c.cross_domain) for c in concepts),
            "roots": sum(1 for c in concepts if not c.prerequisites),
            "isolated": sum(
                1 for c in concepts
                if not (c.prerequisites or c.builds_to or c.cross_domain)
                and not any(c.id in (o.prerequisites + o.builds_to + o.cross_domain) for o in concepts)
            ),
        }

    def merged(self, additions: list[Concept], link_updates: dict[str, dict[str, list[str]]]) -> "KnowledgeGraph":
        """A new graph with `additions` and extra links on existing concepts; raises if invalid."""
        concepts = []
        for concept in self.concepts.values():
            extra = link_updates.get(concept.id, {})
            concepts.append(
                Concept(**{**asdict(concept), **{k: list(dict.fromkeys(getattr(concept, k) + v)) for k, v in extra.items()}})
            )
        return KnowledgeGraph(concepts + additions, self.source)


def _concept_from_dict(entry, path: Path, index: int) -> Concept:
    where = f"{path}: concepts[{index}]"
    if not isinstance(entry, dict):
        raise SutraError(f"{where}: expected a mapping with id, name, domain, complexity")
    unknown = set(entry) - {f for f in Concept.__dataclass_fields__}
    if unknown:
        raise SutraError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(Concept.__dataclass_fields__)}")
    for key in ("id", "name", "domain", "complexity"):
        if key not in entry:
            raise SutraError(f"{where}: missing '{key}'")
    cid = entry["id"]
    if not isinstance(cid, str) or not ID_PATTERN.match(cid):
        raise SutraError(f"{where}: id {cid!r} must be lowercase words joined by '-', e.g. 'linear-equations'")
    if entry["domain"] not in DOMAINS:
        raise SutraError(f"{where} ('{cid}'): domain {entry['domain']!r} is not one of: {', '.join(DOMAINS)}")
    complexity = entry["complexity"]
    if not isinstance(complexity, int) or isinstance(complexity, bool) or not 1 <= complexity <= 10:
        raise SutraError(f"{where} ('{cid}'): complexity must be an integer from 1 to 10, got {complexity!r}")
    links = {}
    for relation in ("prerequisites", "builds_to", "cross_domain"):
        value = entry.get(relation) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SutraError(f"{where} ('{cid}'): {relation} must be a list of concept ids")
        links[relation] = value
    return Concept(cid, str(entry["name"]), entry["domain"], complexity, description=str(entry.get("description") or ""), **links)
