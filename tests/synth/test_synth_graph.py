import json

import pytest
import yaml

from sutra.errors import SutraError
from sutra.synth.expand import add_proposals, parse_proposals
from sutra.synth.graph import DOMAINS, Concept, KnowledgeGraph
from sutra.synth.judge import MalformedAnswer


def write_graph(tmp_path, concepts, name="g.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"concepts": concepts}) if name.endswith(".yaml") else json.dumps({"concepts": concepts}))
    return path


def concept(cid, domain="Mathematics", complexity=3, **links):
    return {"id": cid, "name": cid.replace("-", " ").title(), "domain": domain, "complexity": complexity, **links}


def test_seed_graph_covers_every_domain_and_orders_prerequisites_first():
    graph = KnowledgeGraph.load("default")
    stats = graph.stats()
    assert stats["domains_covered"] == 9 and stats["concepts"] >= 36 and stats["isolated"] == 0
    assert all(stats["by_domain"][d] >= 4 for d in DOMAINS)
    order = [c.id for c in graph.curriculum()]
    assert sorted(order) == sorted(graph.concepts)
    position = {cid: i for i, cid in enumerate(order)}
    for c in graph.concepts.values():
        assert all(position[p] < position[c.id] for p in c.prerequisites)
        assert all(position[b] > position[c.id] for b in c.builds_to)


def test_curriculum_puts_lower_complexity_first_among_ready_concepts(tmp_path):
    path = write_graph(tmp_path, [concept("hard", complexity=8), concept("easy", complexity=2), concept("mid", complexity=5, prerequisites=["easy"])])
    assert [c.id for c in KnowledgeGraph.load(path).curriculum()] == ["easy", "mid", "hard"]


def test_dangling_id_is_named(tmp_path):
    path = write_graph(tmp_path, [concept("a", prerequisites=["missing-thing"])])
    with pytest.raises(SutraError, match="'a' lists unknown id 'missing-thing' in prerequisites"):
        KnowledgeGraph.load(path)


def test_prerequisite_cycle_is_reported_with_its_path(tmp_path):
    path = write_graph(tmp_path, [concept("a", prerequisites=["c"]), concept("b", prerequisites=["a"], builds_to=["c"]), concept("c")], "g.json")
    with pytest.raises(SutraError, match=r"prerequisite cycle (a -> b -> c -> a|b -> c -> a -> b|c -> a -> b -> c)"):
        KnowledgeGraph.load(path)


def test_cross_domain_links_may_be_mutual(tmp_path):
    path = write_graph(tmp_path, [concept("a", cross_domain=["b"]), concept("b", domain="Science", cross_domain=["a"])])
    assert len(KnowledgeGraph.load(path).concepts) == 2


@pytest.mark.parametrize("bad, message", [
    ({"domain": "Astrology"}, "domain 'Astrology' is not one of"),
    ({"complexity": 11}, "complexity must be an integer from 1 to 10"),
    ({"id": "Not An Id"}, "must be lowercase words"),
    ({"colour": "red"}, "unknown field"),
])
def test_bad_fields_are_named_with_their_position(tmp_path, bad, message):
    path = write_graph(tmp_path, [concept("ok"), {**concept("x"), **bad}])
    with pytest.raises(SutraError, match=rf"concepts\[1\].*{message}"):
        KnowledgeGraph.load(path)


def test_save_and_load_round_trip_in_both_formats(tmp_path):
    graph = KnowledgeGraph.load("default")
    for name in ("copy.yaml", "copy.json"):
        graph.save(tmp_path / name)
        again = KnowledgeGraph.load(tmp_path / name)
        assert again.fingerprint == graph.fingerprint


def test_unparseable_graph_file_gives_one_clear_error(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("concepts: [\n  {id: a, name: A\n")
    with pytest.raises(SutraError, match=r"broken.yaml:3: not valid YAML \(expected ',' or '}', but got '<stream end>'\); fix the graph file's syntax"):
        KnowledgeGraph.load(path)  # (it named no line)
    (tmp_path / "broken.json").write_text('{"concepts": [\n  {"id": "a",,}]}')
    with pytest.raises(SutraError, match=r"broken.json:2: not valid JSON \(Expecting property name enclosed in double quotes\)"):
        KnowledgeGraph.load(tmp_path / "broken.json")
    path.write_text("concepts: []\n")
    with pytest.raises(SutraError, match="broken.yaml: expected a mapping with a non-empty 'concepts' list"):
        KnowledgeGraph.load(path)


def test_neighbourhood_uses_both_edge_directions():
    graph = KnowledgeGraph.load("default")
    links = graph.neighbourhood("fractions")
    assert "Counting and Place Value" in links["prerequisites"]
    assert "Linear Equations" in links["builds_to"]  # linear-equations lists fractions as a prerequisite
    assert "Rhythm and Meter in Music" in links["cross_domain_connections"]


def test_expansion_validates_each_proposal_and_counts_refusals():
    from collections import Counter

    graph = KnowledgeGraph.load("default")
    parent = graph.concepts["fractions"]
    proposals = parse_proposals('Here: {"concepts": [{"name": "Equivalent Fractions", "complexity": 3, "related": ["Rhythm and Meter in Music", "Nonsense"]},'
                                ' {"name": "Fractions", "complexity": 3}, {"name": "Mixed Numbers", "complexity": 14}, {"name": "", "complexity": 2},'
                                ' {"name": "Adding Fractions", "complexity": 4, "related": ["linear-equations"]},'
                                ' {"name": "Unit Fractions", "complexity": 2, "related": 5}, {"name": "Fraction Strips", "complexity": 2, "related": "Rhythm and Meter in Music"}]}')
    report = Counter()
    expanded = add_proposals(graph, parent, proposals, report)
    # links that are not a list: a number is dropped and counted (it was a traceback), one name is read as a list of it
    assert report == Counter(added=4, duplicate=1, bad_complexity=1, empty_name=1, unknown_link_dropped=1, malformed_links_dropped=1)
    assert expanded.concepts["unit-fractions"].cross_domain == [] and expanded.concepts["fraction-strips"].cross_domain == ["music-rhythm-and-meter"]
    new = expanded.concepts["equivalent-fractions"]
    assert new.domain == "Mathematics" and new.builds_to == ["fractions"] and new.prerequisites == parent.prerequisites
    assert new.cross_domain == ["music-rhythm-and-meter"]
    assert expanded.concepts["adding-fractions"].cross_domain == []  # same-domain links are not cross-domain
    with pytest.raises(MalformedAnswer):
        parse_proposals('{"ideas": []}')


def test_merged_refuses_a_cycle():
    graph = KnowledgeGraph.load("default")
    loop = Concept("loop", "Loop", "Mathematics", 3, prerequisites=["fractions"], builds_to=["counting-and-place-value"])
    with pytest.raises(SutraError, match="cycle"):
        graph.merged([loop], {})
