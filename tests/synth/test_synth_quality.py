import json

import re

import pytest

from sutra.errors import SutraError
from sutra.synth.clean import CleanConfig, Deduplicator, clean_files, degenerate_reason, strip_boilerplate, trim_to_last_sentence
from sutra.synth.diversity import Coverage, Planner, prior_coverage
from sutra.synth.graph import KnowledgeGraph
from sutra.synth.judge import DIMENSIONS, MalformedAnswer, combine, heuristic_signals, information_density, parse_assessment
from sutra.synth.prompts import PromptSet, export_defaults
from sutra.synth.runner import parse_annotation, share

GOOD = ("Fractions describe parts of a whole. When a pizza is cut into eight equal slices, each slice is one eighth of the pizza. "
        "The number on the bottom, the denominator, tells us how many equal parts the whole has been divided into. The number on top, "
        "the numerator, counts how many of those parts we are talking about. Two fractions are equivalent when they name the same amount, "
        "as one half and two quarters do. To compare fractions with different denominators, rewrite them over a common denominator first.")


def test_judge_answers_are_repaired_or_refused():
    exact = parse_assessment('{"clarity": 7, "accuracy": 8, "pedagogy": 6, "engagement": 5, "depth": 4, "creativity": 5}')
    assert exact == {"clarity": 0.7, "accuracy": 0.8, "pedagogy": 0.6, "engagement": 0.5, "depth": 0.4, "creativity": 0.5}
    repaired = parse_assessment("Sure:\n```json\n{'Clarity': 7, 'accuracy': '8', 'pedagogy': 6.0, 'engagement': 5, 'depth': 4, 'creativity': 5,}\n```")
    assert repaired == exact
    # among several objects, the one with the scores (first "{" to last "}" was no JSON here)
    around = '<think>{"plan": "read it"}</think> {"clarity": 7, "accuracy": 8, "pedagogy": 6, "engagement": 5, "depth": 4, "creativity": 5} (not {1, 2})'
    assert parse_assessment(around) == exact
    for broken in ("I think it is good.", '{"clarity": 7}', '{"clarity": "high", "accuracy": 1, "pedagogy": 1, "engagement": 1, "depth": 1, "creativity": 1}',
                   '{"clarity": -1, "accuracy": 1, "pedagogy": 1, "engagement": 1, "depth": 1, "creativity": 1}',
                   '{"clarity": 8, "accuracy": NaN, "pedagogy": 7, "engagement": 6, "depth": 5, "creativity": 5}',  # max/min skip NaN
                   '{"clarity": 8, "accuracy": "nan", "pedagogy": 7, "engagement": 6, "depth": 5, "creativity": "inf"}',
                   # another scale is refused (and asked again), never guessed from the answer
                   '{"clarity": 0.7, "accuracy": 0.8, "pedagogy": 0.6, "engagement": 0.5, "depth": 0.4, "creativity": 0.5}',
                   '{"clarity": 80, "accuracy": 70, "pedagogy": 60, "engagement": 50, "depth": 40, "creativity": 50}',
                   '{"clarity": "80%", "accuracy": 7, "pedagogy": 6, "engagement": 5, "depth": 4, "creativity": 5}'):
        with pytest.raises(MalformedAnswer):
            parse_assessment(broken)


def test_quality_score_combines_judge_and_heuristics_and_density_labels():
    signals = heuristic_signals(GOOD, 110, 100)
    assert set(signals) == {"length", "repetition", "structure", "language"} and all(0 <= v <= 1 for v in signals.values())
    assert signals["language"] == 1.0 and signals["repetition"] > 0.9
    high = combine({d: 1.0 for d in DIMENSIONS}, signals)
    low = combine({d: 0.0 for d in DIMENSIONS}, signals)
    assert 0 <= low < high <= 1 and high - low == pytest.approx(0.7, abs=0.002)
    assert information_density("the the the and of it is " * 20) == "low"
    assert information_density(GOOD) in ("medium", "high")


@pytest.mark.parametrize("text, reason", [
    ("", "empty"),
    ("I'm sorry, but I can't help with that request. " + GOOD, "refusal"),
    ("As an AI language model, I cannot browse. " + GOOD, "refusal"),
    ("The loop repeats itself again and again.\n" * 5 + GOOD, "repetition_loop"),
    (GOOD + " very" * 12 + ".", "repetition_loop"),
    ("Fractions are parts.", "too_short"),
    ("Les fractions décrivent des parties d'un tout. " * 3 + "Quand une pizza est coupée en huit parts égales, chaque part est un huitième. " * 2, "wrong_language"),
    (GOOD + " Then we add the numerators and keep the", "truncated"),
])
def test_degenerate_outputs_are_named(text, reason, tokenizer):
    assert degenerate_reason(text, len(tokenizer.encode(text)), CleanConfig(min_tokens=30)) == reason


def test_good_text_passes_and_limits_apply(tokenizer):
    n = len(tokenizer.encode(GOOD))
    assert degenerate_reason(GOOD, n, CleanConfig(min_tokens=30)) is None
    assert degenerate_reason(GOOD, n, CleanConfig(min_tokens=30, max_tokens=n - 1)) == "too_long"


@pytest.mark.parametrize("opening", [
    "As an airfoil tilts, the air below it slows and the pressure there rises. ",  # "as an ai" without its word boundary
    "Student: I'm sorry, I still do not see why two quarters make one half.\nTeacher: Let us draw it. ",  # a dialogue's apology
])
def test_words_that_only_look_like_a_refusal_are_kept(opening, tokenizer):
    text = opening + GOOD
    assert degenerate_reason(text, len(tokenizer.encode(text)), CleanConfig(min_tokens=30)) is None


def test_boilerplate_is_stripped_and_truncations_trimmed():
    chatty = "Sure! Here's an explanation of fractions:\n\n" + GOOD + "\n\nI hope this helps! Let me know if you have questions."
    assert strip_boilerplate(chatty) == GOOD
    assert strip_boilerplate("Sure!\n\nHere is the lesson:\n\n" + GOOD + "\n\nFeel free to ask more.") == GOOD
    # first and last lines of the subject itself stay
    subject = "Absolutely continuous functions are a class of functions.\n" + GOOD + "\nFeel free to check this with a glass of water."
    assert strip_boilerplate(subject) == subject
    assert strip_boilerplate("Here is why ice floats.\n" + GOOD) == "Here is why ice floats.\n" + GOOD
    assert trim_to_last_sentence(GOOD + " And then the numer") == GOOD
    assert trim_to_last_sentence("no sentence end at all") == ""


def test_exact_and_near_duplicates_are_caught():
    dedup = Deduplicator()
    dedup.add("a", GOOD)
    assert dedup.duplicate_reason("  " + GOOD.upper()) == "exact_duplicate"  # normalisation ignores case and spacing
    assert dedup.duplicate_reason(GOOD.replace("pizza", "pie", 1)) == "near_duplicate"
    assert dedup.duplicate_reason("Photosynthesis lets plants turn light, water and carbon dioxide into sugar and oxygen in their leaves.") is None
    # numbers and other scripts count: the exact hash and the shingles dropped them
    dedup.add("sum", "Worked example: 12 x 7 = 84, so twelve rows of seven chairs hold 84 people.")
    assert dedup.duplicate_reason("Worked example: 13 x 8 = 104, so thirteen rows of eight chairs hold 104 people.") is None
    dedup.add("greek", "Die Wellenlänge λ und die Frequenz f ergeben zusammen c = λ f.")
    assert dedup.duplicate_reason("Die Wellenlänge μ und die Frequenz f ergeben zusammen c = μ f.") is None


def test_near_duplicates_are_judged_by_the_threshold_not_by_any_lsh_candidate():
    """Any LSH candidate used to count: at --dedup-threshold 0.8, texts of true shingle Jaccard 0.71
    were flagged 21 times in 200, and 0.84 ones missed 56 times (MinHash estimates still vary by about
    0.03 around the true value, hence the margins)."""
    import random

    rng = random.Random(0)
    flagged = {}
    for changed_every, label in ((30, "0.71"), (80, "0.88")):  # one word in N changed: shingle Jaccard about 0.71 and 0.88
        hits = 0
        for _ in range(100):
            base = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(300)]
            other = list(base)
            for i in range(rng.randrange(changed_every), 300, changed_every):
                other[i] = "zz" + other[i]
            dedup = Deduplicator(threshold=0.8)
            dedup.add("base", " ".join(base))
            hits += dedup.duplicate_reason(" ".join(other)) == "near_duplicate"
        flagged[label] = hits
    assert flagged["0.71"] <= 3 and flagged["0.88"] >= 95, flagged


def test_clean_command_reports_counts_by_reason(tmp_path, tokenizer):
    records = [{"text": GOOD}, {"text": GOOD}, {"text": "Too short."}, {"text": GOOD.replace("pizza", "cake", 1)}]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = clean_files([str(source)], tmp_path / "out", CleanConfig(min_tokens=30))
    assert report["read"] == 4 and report["kept"] == 1
    assert report["removed"] == {"exact_duplicate": 1, "too_short": 1, "near_duplicate": 1}
    assert len((tmp_path / "out" / "train_000.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "out" / ".synth" / "clean-report.json").read_text())["kept"] == 1
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n\n{"no": "text"}\n')  # named by its line, past the blank one
    with pytest.raises(SutraError, match="bad.jsonl:3: the record has no 'text'"):
        clean_files([str(tmp_path / "bad.jsonl")], tmp_path / "out2", CleanConfig())
    # a token_count is counted again, not trusted: a string failed with a TypeError, a stale 3 dropped a long text as too short
    counted = tmp_path / "counted.jsonl"
    counted.write_text(json.dumps({"text": GOOD, "token_count": "120"}) + "\n" + json.dumps({"text": GOOD.replace("pizza", "soup"), "token_count": 3}) + "\n")
    report = clean_files([str(counted)], tmp_path / "out3", CleanConfig(min_tokens=30))
    assert report["removed"] == {} and report["kept"] == 2
    kept = [json.loads(line) for line in (tmp_path / "out3" / "train_000.jsonl").read_text().splitlines()]
    assert [r["token_count"] for r in kept] == [len(tokenizer.encode(r["text"])) for r in kept]


def test_a_failed_clean_keeps_the_earlier_output_and_leaves_no_temporary_file(tmp_path):
    out, good, bad = tmp_path / "out", tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps({"text": GOOD}) + "\n")
    clean_files([str(good)], out, CleanConfig(min_tokens=30))
    before = (out / "train_000.jsonl").read_bytes()
    bad.write_text(json.dumps({"text": GOOD.replace("pizza", "cake")}) + "\n" + '{"no": "text"}\n')
    with pytest.raises(SutraError, match="bad.jsonl:2: the record has no 'text'"):  # after good.jsonl's record was written
        clean_files([str(good), str(bad)], out, CleanConfig(min_tokens=30))
    with pytest.raises(SutraError, match="missing.jsonl: no such JSONL file"):
        clean_files([str(good), str(tmp_path / "missing.jsonl")], out, CleanConfig(min_tokens=30))
    assert (out / "train_000.jsonl").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [".synth", "train_000.jsonl"]


def test_planner_balances_every_axis_and_is_deterministic():
    graph = KnowledgeGraph.load("default")
    prompts = PromptSet()
    types, styles = list(prompts.content_types), list(prompts.styles)

    def plan(n, seed=0, prior=None):
        items = Planner(graph, types, styles, seed, prior).items()
        return [next(items) for _ in range(n)]

    first = plan(len(types) * len(styles))
    assert first == plan(len(types) * len(styles))
    assert first != plan(len(types) * len(styles), seed=1)
    by_style = {s: sum(i.style == s for i in first) for s in styles}
    by_type = {t: sum(i.content_type == t for i in first) for t in types}
    by_domain = {}
    for item in first:
        by_domain[graph.concepts[item.concept_id].domain] = by_domain.get(graph.concepts[item.concept_id].domain, 0) + 1
    assert max(by_style.values()) - min(by_style.values()) <= 1
    assert max(by_type.values()) - min(by_type.values()) <= 1
    assert max(by_domain.values()) - min(by_domain.values()) <= 1
    # Prior coverage steers the plan toward what earlier data lacks.
    earlier = [{"domain": "Mathematics", "concept_name": "Fractions", "complexity_level": 3, "content_type": "qa_pairs"}] * 50
    steered = plan(18, prior=prior_coverage(earlier, graph))
    assert all(graph.concepts[i.concept_id].domain != "Mathematics" for i in steered[:8])


def test_coverage_keys_cover_the_four_axes():
    coverage = Coverage()
    coverage.add("Science", "photosynthesis", 4, "tutorial", "faq")
    assert coverage["domain=Science"] == coverage["complexity=4"] == coverage["content_type=tutorial"] == coverage["style=faq"] == 1


def test_prompt_files_can_be_overridden_and_are_validated(tmp_path):
    export_defaults(tmp_path)
    (tmp_path / "styles.yaml").write_text("pirate: Write like a pirate.\n")
    prompts = PromptSet(tmp_path)
    assert list(prompts.styles) == ["pirate"] and len(prompts.content_types) > 15
    messages = prompts.messages("judge", text="T", concept_name="C", domain="D", complexity=3, content_type="tutorial")
    assert messages[0]["role"] == "system" and '"clarity"' in messages[1]["content"]
    (tmp_path / "judge.yaml").write_text("user: Rate $text for $audience\n")
    with pytest.raises(SutraError, match=r"judge.yaml: user: unknown placeholder\(s\) audience"):
        PromptSet(tmp_path)
    with pytest.raises(SutraError, match="unknown style"):
        PromptSet().check_choices(None, ["pirate"])


def test_annotations_are_validated():
    good = parse_annotation('{"concept_name": "Ohm\'s law", "domain": "engineering", "complexity_level": "5", "prerequisites": "algebra"}')
    assert good == {"concept_name": "Ohm's law", "domain": "Engineering", "complexity_level": 5, "prerequisites": ["algebra"],
                    "builds_to": [], "cross_domain_connections": []}
    with pytest.raises(MalformedAnswer):
        parse_annotation('{"concept_name": "x", "domain": "Cooking", "complexity_level": 5}')
    # placeholders a small model copies from an example are not metadata
    copied = parse_annotation('{"concept_name": "Ohm", "domain": "engineering", "complexity_level": 3, "prerequisites": ["..."], "builds_to": ["..", "circuits"]}')
    assert (copied["prerequisites"], copied["builds_to"]) == ([], ["circuits"])
    with pytest.raises(MalformedAnswer):
        parse_annotation('{"concept_name": "...", "domain": "engineering", "complexity_level": 3}')
    for endless in ("Infinity", "1e400"):  # int() of them raised OverflowError, which ended the run
        with pytest.raises(MalformedAnswer):
            parse_annotation(f'{{"concept_name": "Ohm", "domain": "engineering", "complexity_level": {endless}}}')


def test_prompts_show_no_example_values_to_copy():
    """The 135M offline judge answered every text with the prompt example's six scores, verbatim."""
    from sutra.synth.prompts import PromptSet

    prompts = PromptSet()
    judge = prompts.messages("judge", text="T", concept_name="C", domain="Physics", content_type="tutorial", complexity=3)[-1]["content"]
    annotate = prompts.messages("annotate", text="T", domains="Physics")[-1]["content"]
    assert not re.search(r"\d\.\d", judge.replace("T", "")) and '"..."' not in annotate and "complexity_level\": 5" not in annotate


def test_shares_of_a_target_sum_to_it():
    assert [share(20, i, 3) for i in range(3)] == [7, 7, 6]
    assert share(None, 0, 2) is None
