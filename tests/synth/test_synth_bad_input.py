"""Bad input to the `sutra synth` commands: one clear `sutra: error:` line and exit status 2, before
any work, and nothing of the user's replaced or lost. All run through the real CLI on real files; no
request reaches a server (the URLs given have none)."""

import errno
import json
import shutil
from pathlib import Path

import pytest

from sutra.synth.graph import SEED_GRAPH
from sutra.synth.prompts import DEFAULT_DIR
from sutra.synth.serve import free_port

GOOD = ("Fractions describe parts of a whole. When a pizza is cut into eight equal slices, each slice is one eighth of the pizza. "
        "The number on the bottom, the denominator, tells us how many equal parts the whole has been divided into. The number on top, "
        "the numerator, counts how many of those parts we are talking about.")


def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def _jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _error(result, *fragments):
    code, _, stderr = result
    assert code == 2, stderr
    assert stderr.startswith("sutra: error:") and "Traceback" not in stderr, stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    return stderr


# 1 ---------------------------------------------------------------------------------------

def test_clean_never_replaces_its_own_input_or_a_file_it_did_not_write(synth, tmp_path):
    out = tmp_path / "sy"
    own = _jsonl(out / "train_000.jsonl", [{"text": GOOD}])
    before = own.read_bytes()
    _error(synth("synth", "clean", own, "--out", out, "--min-tokens", "10"), "is both an input and the output")
    assert own.read_bytes() == before
    other = _jsonl(tmp_path / "other.jsonl", [{"text": GOOD}])
    _error(synth("synth", "clean", other, "--out", out, "--min-tokens", "10"), "was not written by 'sutra synth clean'")
    assert own.read_bytes() == before and not (out / ".synth").exists()
    # an earlier clean's output is replaced, as before
    clean_out = tmp_path / "cleaned"
    synth("synth", "clean", other, "--out", clean_out, "--min-tokens", "10", check=True)
    code, stdout, _ = synth("synth", "clean", other, "--out", clean_out, "--min-tokens", "10")
    assert code == 0 and "kept 1 of 1" in stdout


# 2 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "rephrase", "clean", "prompts"])
def test_an_out_that_is_a_file_is_one_clear_error(synth, tmp_path, command):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": GOOD}])
    taken = tmp_path / "taken"
    taken.write_text("keep me\n")
    args = {
        "run": ["synth", "run", "--n", "1", "--out", taken, "--base-url", nowhere()],
        "rephrase": ["synth", "rephrase", source, "--out", taken, "--base-url", nowhere()],
        "clean": ["synth", "clean", source, "--out", taken],
        "prompts": ["synth", "prompts", "--export", taken],
    }[command]
    _error(synth(*args), f"{taken}: is a file; give a directory path to write")
    assert taken.read_text() == "keep me\n"


@pytest.mark.parametrize("command", ["run", "clean", "prompts"])
def test_an_out_on_a_read_only_filesystem_is_one_clear_error(synth, tmp_path, monkeypatch, command):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": GOOD}])
    out = tmp_path / "ro" / "out"

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    args = {
        "run": ["synth", "run", "--n", "1", "--out", out, "--base-url", nowhere()],
        "clean": ["synth", "clean", source, "--out", out],
        "prompts": ["synth", "prompts", "--export", out],
    }[command]
    _error(synth(*args), "cannot create the output directory (Read-only file system)")


# 3 and 9 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("rows", [[{"text": GOOD}], [{"id": "a", "text": GOOD, "token_count": 60}]])
def test_run_refuses_an_out_holding_data_synth_did_not_write(synth, tmp_path, rows):
    out = tmp_path / "out"
    data = _jsonl(out / "train_000.jsonl", rows)
    before = data.read_bytes()
    _error(synth("synth", "run", "--n", "1", "--out", out, "--base-url", nowhere()), "was not written by 'sutra synth'", "new --out")
    assert data.read_bytes() == before and not (out / ".synth").exists()


def test_a_corrupt_run_settings_record_is_one_clear_error(synth, tmp_path):
    out = tmp_path / "out"
    (out / ".synth").mkdir(parents=True)
    (out / ".synth" / "shard_000.json").write_text("{bad")
    _error(synth("synth", "run", "--n", "1", "--out", out, "--base-url", nowhere()),
           "shard_000.json: the run's settings record is corrupted", "write to a new --out")


# 4 ---------------------------------------------------------------------------------------

def test_stats_refuses_foreign_jsonl_and_a_directory_without_data(synth, tmp_path):
    foreign = tmp_path / "foreign"
    _jsonl(foreign / "train_000.jsonl", [{"text": GOOD}])
    _error(synth("synth", "stats", foreign), "train_000.jsonl:1: the record has no 'token_count' field")
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(synth("synth", "stats", empty), "holds no train_*.jsonl data files")
    assert list(empty.iterdir()) == []


# 5 ---------------------------------------------------------------------------------------

def test_balance_with_must_be_a_directory_of_jsonl(synth, tmp_path):
    a_file = _jsonl(tmp_path / "f.jsonl", [{"text": GOOD}])
    empty = tmp_path / "empty"
    empty.mkdir()
    for where, message in ((tmp_path / "nope", "not a directory"), (a_file, "not a directory"), (empty, "holds no JSONL files")):
        _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--balance-with", where, "--base-url", nowhere()),
               f"--balance-with {where}: {message}")
    _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--balance-with", tmp_path, "--base-url", nowhere()),
           "f.jsonl:1: the record has no 'domain' field")
    assert not (tmp_path / "o").exists()


# 6, 7, 8 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2", "-1", "0", "nan", "inf"])
def test_clean_refuses_a_bad_dedup_threshold(synth, tmp_path, value):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": GOOD}])
    _error(synth("synth", "clean", source, "--out", tmp_path / "o", "--dedup-threshold", value), f"--dedup-threshold {float(value)}: must be in (0, 1]")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1e309", "hot"])
def test_run_refuses_a_bad_temperature(capsys, tmp_path, value):
    from sutra.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["synth", "run", "--n", "1", "--out", str(tmp_path / "o"), "--base-url", nowhere(), "--temperature", value])
    assert exited.value.code == 2 and "argument --temperature: must be a finite number, 0 or more" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--min-tokens", "1000", "--max-tokens", "10"], "--min-tokens 1000 is above --max-tokens 10"),
    (["--max-tokens", "0"], "--max-tokens 0: must be at least 1"),
    (["--min-tokens", "-5"], "--min-tokens -5: must be at least 1"),
])
@pytest.mark.parametrize("command", ["run", "rephrase", "clean"])
def test_contradictory_or_non_positive_token_bounds_are_refused(synth, tmp_path, command, flags, message):
    source = _jsonl(tmp_path / "in.jsonl", [{"text": GOOD}])
    args = {
        "run": ["synth", "run", "--n", "1", "--base-url", nowhere()],
        "rephrase": ["synth", "rephrase", source, "--base-url", nowhere()],
        "clean": ["synth", "clean", source],
    }[command]
    _error(synth(*args, "--out", tmp_path / "o", *flags), message)
    assert not (tmp_path / "o").exists()


# 10 --------------------------------------------------------------------------------------

def test_prompts_dir_with_unrecognised_or_no_prompt_files_is_refused(synth, tmp_path):
    misnamed = tmp_path / "misnamed"
    misnamed.mkdir()
    shutil.copyfile(DEFAULT_DIR / "generate.yaml", misnamed / "generate.yml")
    _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--prompts", misnamed, "--base-url", nowhere()),
           "generate.yml: not a prompt file name", "generate.yaml")
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--prompts", empty, "--base-url", nowhere()),
           "--prompts holds no prompt file")
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "judge.yaml").write_text("user: " + "[" * 5000 + "]" * 5000 + "\n")  # past Python's recursion limit: a traceback before
    _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--prompts", deep, "--base-url", nowhere()),
           f"{deep / 'judge.yaml'}: cannot parse YAML (maximum recursion depth")
    exported = tmp_path / "exported"
    synth("synth", "prompts", "--export", exported, check=True)
    from sutra.synth.prompts import PromptSet

    assert PromptSet(exported).styles  # an exported set is accepted


# 11 --------------------------------------------------------------------------------------

def test_graph_expand_never_replaces_its_input_and_writes_only_graph_suffixes(synth, tmp_path):
    graph = tmp_path / "g.yaml"
    shutil.copyfile(SEED_GRAPH, graph)
    before = graph.read_bytes()
    _error(synth("synth", "graph", "expand", "--graph", graph, "--out", graph, "--base-url", nowhere()), "is an input of this command")
    assert graph.read_bytes() == before
    recipe = tmp_path / "recipe.yaml"  # a YAML file that is not a graph: a slip of --out
    recipe.write_text("model: tiny\n")
    _error(synth("synth", "graph", "expand", "--graph", graph, "--out", recipe, "--base-url", nowhere()), "exists and is not a knowledge graph")
    assert recipe.read_text() == "model: tiny\n"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine\n")
    _error(synth("synth", "graph", "expand", "--out", notes, "--base-url", nowhere()), "a graph is written as .yaml, .yml or .json")
    assert notes.read_text() == "mine\n"


# 12 --------------------------------------------------------------------------------------

def test_a_byte_order_mark_is_read_not_refused(synth, tmp_path):
    source = tmp_path / "bom.jsonl"
    source.write_bytes(b"\xef\xbb\xbf" + (json.dumps({"text": GOOD}) + "\n").encode())
    code, stdout, stderr = synth("synth", "clean", source, "--out", tmp_path / "o", "--min-tokens", "10")
    assert code == 0 and "kept 1 of 1" in stdout, stderr
    graph = tmp_path / "g.yaml"
    graph.write_bytes(b"\xef\xbb\xbf" + SEED_GRAPH.read_bytes())
    code, stdout, stderr = synth("synth", "graph", "stats", graph)
    assert code == 0 and "concepts" in stdout, stderr
    graph_json = tmp_path / "g.json"
    graph_json.write_bytes(b"\xef\xbb\xbf" + json.dumps({"concepts": [{"id": "a", "name": "A", "domain": "Mathematics", "complexity": 2}]}).encode())
    assert synth("synth", "graph", "stats", graph_json, check=True)[1].startswith(f"graph {graph_json}: 1 concepts")
