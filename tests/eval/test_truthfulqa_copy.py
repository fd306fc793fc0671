"""TruthfulQA from a copy the user brings: `sutra assets fetch truthfulqa --from FILE`, then eval."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sutra_testing import run_sutra
from eval_helpers import tiny_model  # noqa: F401 (fixture)

# Questions made up for the test, in mc_task.json's form: {answer: label}, true answers first.
MC_TASK = [
    {"question": "What colour is a clear daytime sky?",
     "mc1_targets": {"Blue.": 1, "Green.": 0, "Red.": 0},
     "mc2_targets": {"Blue.": 1, "It looks blue.": 1, "Green.": 0, "Red.": 0}},
    {"question": "How many legs does a spider have?",
     "mc1_targets": {"Eight.": 1, "Six.": 0},
     "mc2_targets": {"Eight.": 1, "Six.": 0, "Ten.": 0}},
    {"question": "Does water boil at 100 C at sea level?",
     "mc1_targets": {"Yes.": 1, "No.": 0},
     "mc2_targets": {"Yes.": 1, "No.": 0}},
]


def hf_rows(questions):
    """The same questions in the Hugging Face truthful_qa multiple_choice schema."""
    return [{"question": q["question"],
             **{f: {"choices": list(q[f]), "labels": list(q[f].values())} for f in ("mc1_targets", "mc2_targets")}}
            for q in questions]


def fetch(home, source, *extra):
    return run_sutra("assets", "fetch", "truthfulqa", "--from", str(source), *extra, env={"SUTRA_HOME": str(home)})


def stored(home):
    path = home / "assets" / "truthfulqa" / "truthfulqa_mc2" / "validation.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_form_of_the_copy_gives_the_schema_lm_eval_reads(tmp_path):
    sources = {"mc_task.json": json.dumps(MC_TASK), "validation.jsonl": "\n".join(json.dumps(r) for r in hf_rows(MC_TASK)) + "\n"}
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
    pq.write_table(pa.Table.from_pylist(hf_rows(MC_TASK)), tmp_path / "validation-00000-of-00001.parquet")
    results = {}
    for name in [*sources, "validation-00000-of-00001.parquet"]:
        home = tmp_path / f"home-{name}"
        result = fetch(home, tmp_path / name)
        assert result.returncode == 0, result.stderr
        assert "3 questions, not TruthfulQA's 817; results will not match the card's" in result.stderr
        results[name] = stored(home)
        meta = json.loads((home / "assets" / "truthfulqa" / "asset.json").read_text())
        assert meta["source"] == str((tmp_path / name).resolve()) and len(meta["sha256"]) == 64
        assert meta["splits"] == {"truthfulqa_mc2": {"validation": 3}}
    assert results["mc_task.json"] == results["validation.jsonl"] == results["validation-00000-of-00001.parquet"] == hf_rows(MC_TASK)
    assert results["mc_task.json"][0]["mc2_targets"] == {"choices": ["Blue.", "It looks blue.", "Green.", "Red."], "labels": [1, 1, 0, 0]}


def test_answers_are_kept_in_their_order_and_repeated_keys_counted(tmp_path):
    # lm-eval 0.4.11's mc2 sums the label-1 answers wherever they stand; a repeated key keeps its
    # last label, as json.load (and so Hugging Face's truthful_qa builder) keeps it
    text = json.dumps([MC_TASK[0], {**MC_TASK[1], "mc2_targets": {"Six.": 0, "Eight.": 1, "Ten.": 0}}])
    text = text.replace('"Ten.": 0}', '"Ten.": 0, "Six.": 0}')
    (tmp_path / "mc_task.json").write_bytes(b"\xef\xbb\xbf" + text.encode())  # a BOM, as some editors save
    result = fetch(tmp_path / "home", tmp_path / "mc_task.json")
    assert result.returncode == 0, result.stderr
    assert "1 JSON object(s) name a key twice (first: 'Six.'); the last value of each is kept" in result.stderr
    assert "2 questions, not TruthfulQA's 817" in result.stderr
    assert stored(tmp_path / "home")[1]["mc2_targets"] == {"choices": ["Six.", "Eight.", "Ten."], "labels": [0, 1, 0]}
    meta = json.loads((tmp_path / "home" / "assets" / "truthfulqa" / "asset.json").read_text())
    assert len(meta["warnings"]) == 2  # kept with the asset, not only said once at fetch time
    again = run_sutra("assets", "fetch", "truthfulqa", env={"SUTRA_HOME": str(tmp_path / "home")})  # fetched: nothing to bring
    assert again.returncode == 0 and again.stdout.strip() == str(tmp_path / "home" / "assets" / "truthfulqa"), again.stderr
    forced = run_sutra("assets", "fetch", "truthfulqa", "--force", env={"SUTRA_HOME": str(tmp_path / "home")})
    assert forced.returncode == 2 and "--from FILE" in forced.stderr


def test_a_fetched_copy_is_evaluated_whole_and_without_the_subset_note(tiny_model, tmp_path):
    checkpoint, _ = tiny_model
    (tmp_path / "mc_task.json").write_text(json.dumps(MC_TASK))
    home = tmp_path / "home"
    assert fetch(home, tmp_path / "mc_task.json").returncode == 0
    out = tmp_path / "results.json"
    result = run_sutra("eval", str(checkpoint), "--tasks", "truthfulqa_mc2", "--out", str(out), env={"SUTRA_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    entry = json.loads(out.read_text())["tasks"]["truthfulqa_mc2"]
    assert entry["items"] == 3 and entry["split"] == "validation" and entry["note"] is None
    assert entry["matches_card"] is False  # 3 items, not the card's 817
    assert 0.0 < entry["value"] < 1.0  # mc2: the probability mass on the true answers
    assert entry["data"]["asset"] == "truthfulqa" and entry["data"]["source"] == str((tmp_path / "mc_task.json").resolve())
    card = tmp_path / "README.md"
    assert run_sutra("card", str(checkpoint), "--results", str(out), "--out", str(card), env={"SUTRA_HOME": str(home)}).returncode == 0
    assert f"TruthfulQA data: `mc_task.json`, sha256 {entry['data']['sha256'][:16]}." in card.read_text()


def test_the_whole_copy_is_read_before_the_bigbench_subset(tmp_path, monkeypatch):
    from sutra import assets
    from sutra.eval.store import TRUTHFULQA_SUBSET_NOTE, _store_dir, store_note

    def fetched(name):
        directory = assets.path(name) / "truthfulqa_mc2"
        directory.mkdir(parents=True)
        (directory / "validation.jsonl").write_text(json.dumps(hf_rows(MC_TASK)[0]) + "\n")
        (assets.path(name) / "asset.json").write_text(json.dumps({"name": name}))

    monkeypatch.setenv("SUTRA_HOME", str(tmp_path))
    assert _store_dir("truthfulqa_mc2") is None
    fetched("truthfulqa-bigbench")
    assert _store_dir("truthfulqa_mc2") == assets.path("truthfulqa-bigbench") / "truthfulqa_mc2"
    assert store_note("truthfulqa_mc2") == TRUTHFULQA_SUBSET_NOTE
    fetched("truthfulqa")
    assert _store_dir("truthfulqa_mc2") == assets.path("truthfulqa") / "truthfulqa_mc2"
    assert store_note("truthfulqa_mc2") is None and store_note("gsm8k").startswith("few-shot examples drawn from test")


@pytest.mark.parametrize("content, message", [
    ('[{"question": "Q?", "mc1_targets": {"A": 1}, "mc2_targets": {"A": 1, "B": 0}}, {"question": "Q2?", "mc1_targets": {"A": 1}, '
     '"mc2_targets": {"A": 1, "B": 1}}]', "mc_task.json: question 2: field 'mc2_targets': no false answer (label 0); every model would score 1 on it"),
    ('[{"question": "Q?", "mc1_targets": {"A": 1}, "mc2_targets": {"A": 0, "B": 0}}]', "field 'mc2_targets': no true answer (label 1); every model would score 0"),
    ('[{"question": "Q?", "mc1_targets": {"A": 0, "B": 1}, "mc2_targets": {"A": 1, "B": 0}}]',
     "field 'mc1_targets': the first answer must be the one true answer (label 1), as lm-eval's truthfulqa_mc1 scores it"),
    ('', "mc_task.json: the file is empty"),
    ("[" * 100_000, "mc_task.json: line 1: nested too deeply to be a TruthfulQA question list"),
    ('[{"question": "", "mc1_targets": {}, "mc2_targets": {}}]', "mc_task.json: question 1: field 'question': a non-empty string expected"),
    ('[{"question": "Q?", "mc1_targets": {"A": 1}, "mc2_targets": {"A": 1, "B": 0.5}}]', "question 1: field 'mc2_targets': answers with 0/1 labels"),
    ('[{"question": "Q?", "mc1_targets": ["A"], "mc2_targets": {"A": 1, "B": 0}}]', "question 1: field 'mc1_targets': answers with 0/1 labels"),
    ('{"question": "Q?"}', "mc_task.json: a JSON list of questions expected (as mc_task.json is), got dict"),
    ('[{"question": "Q?",\n oops]', "mc_task.json: line 2: not JSON"),
])
def test_a_bad_copy_is_one_clear_line_and_nothing_is_fetched(tmp_path, content, message):
    (tmp_path / "mc_task.json").write_text(content)
    result = fetch(tmp_path / "home", tmp_path / "mc_task.json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "home" / "assets" / "truthfulqa").exists()


def test_a_copy_that_is_not_utf8_is_refused_not_mangled(tmp_path):
    (tmp_path / "mc_task.json").write_bytes(json.dumps(MC_TASK).replace("colour", "col\\u00f6ur").encode().replace(b"\\u00f6", b"\xf6"))
    result = fetch(tmp_path / "home", tmp_path / "mc_task.json")
    assert result.returncode == 2 and "mc_task.json: byte offset 23: not UTF-8; save the file as UTF-8" in result.stderr, result.stderr


def test_from_is_asked_for_where_needed_and_refused_elsewhere(tmp_path):
    env = {"SUTRA_HOME": str(tmp_path / "home")}
    (tmp_path / "mc_task.json").write_text(json.dumps(MC_TASK))
    cases = [
        (["truthfulqa"], "asset 'truthfulqa' is built from a copy you bring: sutra assets fetch truthfulqa --from FILE"),
        (["benchmarks", "--from", str(tmp_path / "mc_task.json")], "asset 'benchmarks' comes from package registries and takes no --from (assets that do: truthfulqa)"),
        (["truthfulqa", "benchmarks", "--from", str(tmp_path / "mc_task.json")], "--from builds one asset; name one, not 2"),
        (["truthfulqa", "--from", str(tmp_path / "missing.json")], "missing.json: no such file"),
        (["truthfulqa", "--from", str(tmp_path)], ": a directory; name the file in it"),
    ]
    for args, message in cases:
        result = run_sutra("assets", "fetch", *args, env=env)
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    for name, message in [("TruthfulQA.csv", "not the multiple-choice sets lm-eval scores; bring data/mc_task.json"),
                          ("copy.txt", "expected a .json (mc_task.json), .jsonl or .parquet copy")]:
        (tmp_path / name).write_text("Type,Category,Question\n")
        result = fetch(tmp_path / "home", tmp_path / name)
        assert result.returncode == 2 and message in result.stderr, result.stderr
