"""`synth graph expand`: an LLM proposes narrower sub-concepts (and links) for chosen concepts;
each proposal is validated before it joins the graph, and every refusal is counted by reason."""

import asyncio
from collections import Counter

from sutra.errors import SutraError
from sutra.synth.graph import Concept, KnowledgeGraph, slugify
from sutra.synth.judge import MalformedAnswer, ask_json, extract_json_object
from sutra.synth.prompts import PromptSet

EXPAND_SCHEMA = {
    "type": "object",
    "properties": {
        "concepts": {
            "type": "array", "minItems": 1, "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 2, "maxLength": 80},
                    "complexity": {"type": "integer", "minimum": 1, "maximum": 10},
                    "related": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
                },
                "required": ["name", "complexity"],
            },
        }
    },
    "required": ["concepts"],
}


def parse_proposals(answer: str) -> list:
    proposals = extract_json_object(answer, ("concepts",)).get("concepts")
    if not isinstance(proposals, list) or not proposals:
        raise MalformedAnswer("no 'concepts' list in the answer")
    return proposals


def _resolve(graph: KnowledgeGraph, label: str) -> str | None:
    slug = slugify(str(label))
    if slug in graph.concepts:
        return slug
    return next((c.id for c in graph.concepts.values() if c.name.lower() == str(label).strip().lower()), None)


def add_proposals(graph: KnowledgeGraph, parent: Concept, proposals: list, report: Counter) -> KnowledgeGraph:
    """Sub-concepts of `parent`: same domain, same prerequisites, building to the parent;
    related concepts from other domains become cross-domain links."""
    for proposal in proposals:
        if not isinstance(proposal, dict):
            report["malformed_proposal"] += 1
            continue
        name = str(proposal.get("name") or "").strip()
        cid = slugify(name)
        if not cid:
            report["empty_name"] += 1
            continue
        if cid in graph.concepts:
            report["duplicate"] += 1
            continue
        complexity = proposal.get("complexity")
        if not isinstance(complexity, int) or isinstance(complexity, bool) or not 1 <= complexity <= 10:
            report["bad_complexity"] += 1
            continue
        related = proposal.get("related") or []
        if isinstance(related, str):  # one name, not in a list
            related = [related]
        elif not isinstance(related, list):
            report["malformed_links_dropped"] += 1
            related = []
        cross = []
        for label in related:
            target = _resolve(graph, label)
            if target is None:
                report["unknown_link_dropped"] += 1
            elif graph.concepts[target].domain != parent.domain:
                cross.append(target)
        concept = Concept(cid, name, parent.domain, complexity, list(parent.prerequisites), [parent.id], list(dict.fromkeys(cross)))
        try:
            graph = graph.merged([concept], {})
        except SutraError:
            report["invalid_graph"] += 1
            continue
        report["added"] += 1
    return graph


async def expand_graph(graph: KnowledgeGraph, backend, prompts: PromptSet, parents: list[str], per_concept: int, retries: int, seed: int):
    known = ", ".join(c.name for c in graph.concepts.values())

    async def ask(parent: Concept):
        messages = prompts.messages(
            "expand", concept_name=parent.name, domain=parent.domain, complexity=parent.complexity,
            prerequisites=", ".join(graph.names(parent.prerequisites)) or "nothing", count=per_concept, known_concepts=known,
        )
        value, _, _ = await ask_json(backend, messages, EXPAND_SCHEMA, parse_proposals, retries, 64 * per_concept + 64, seed)
        return value

    chosen = [graph.concepts[p] for p in parents]
    answers = await asyncio.gather(*(ask(p) for p in chosen))
    report = Counter()
    for parent, proposals in zip(chosen, answers):
        if proposals is None:
            report["invalid_json"] += 1
            continue
        graph = add_proposals(graph, parent, proposals[:per_concept], report)
    return graph, report
