"""Bad input to the `sutra synth` commands: one clear `sutra: error:` line and exit status 2, before
any work, and nothing of the user's replaced or lost. All run through the real CLI on real files; no
request reaches a server (the URLs given have none)."""

import contextlib
import errno
import json
import os
import shutil
import threading
import time
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
    _jsonl(out / ".synth" / "shard_000.log", [{"id": "x", "status": "rejected", "reason": "empty"}])  # an item was made under it
    _error(synth("synth", "run", "--n", "1", "--out", out, "--base-url", nowhere()),
           "shard_000.json: the run's settings record is corrupted", "write to a new --out")
    (out / ".synth" / "shard_000.json").write_text('{"a": 1}')  # another tool's JSON: it was resumed with nothing checked
    _error(synth("synth", "run", "--n", "1", "--out", out, "--base-url", nowhere()),
           "shard_000.json: the run's settings record is corrupted (no 'kind' field: not a synth run's record)")


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
           f"{deep / 'judge.yaml'}: not valid YAML (maximum recursion depth")
    (deep / "judge.yaml").write_text("system: fine\nuser: [unclosed\n")
    _error(synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--prompts", deep, "--base-url", nowhere()),
           f"{deep / 'judge.yaml'}:3: not valid YAML (expected ',' or ']'")  # (it named no line)
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


# 13: an input file that cannot be read ---------------------------------------------------

def _unreadable(path: Path, kind: str, monkeypatch) -> str:
    """Put an unreadable `kind` of file at `path`; the reason the error should give. (The tests run
    as root, whom file permissions do not stop, so "no permission" is the error a read would raise.)"""
    if kind == "directory":
        path.mkdir()
        return ": cannot read it (Is a directory)"
    if kind == "named pipe":
        os.mkfifo(path)

        def unblock():  # a read that waits for a writer gets end-of-file after 20 s: a failure, not a hung suite
            time.sleep(20)
            with contextlib.suppress(OSError):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

        threading.Thread(target=unblock, daemon=True).start()
        return ": cannot read it (a named pipe, not a file)"
    if kind == "not UTF-8":
        path.write_bytes(b'{"text": "ok"}\n\xff\xfe\n')
        return ":2: cannot read it (not UTF-8 text, byte 15); save the file as UTF-8"
    path.write_text("concepts: []\n")
    open_path = Path.open  # (read_bytes and read_text open through it)

    def denied(self, *args, **kwargs):
        if self == path:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return open_path(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", denied)
    return ": cannot read it (Permission denied)"


CASES = {  # command -> (the file it reads, the arguments)
    "graph stats": ("g.yaml", lambda t: ["synth", "graph", "stats", t / "g.yaml"]),
    "graph expand --graph": ("g.json", lambda t: ["synth", "graph", "expand", "--graph", t / "g.json", "--out", t / "o.yaml", "--base-url", nowhere()]),
    "run --graph": ("g.yaml", lambda t: ["synth", "run", "--n", "1", "--out", t / "o", "--graph", t / "g.yaml", "--base-url", nowhere()]),
    "run --prompts": ("p/judge.yaml", lambda t: ["synth", "run", "--n", "1", "--out", t / "o", "--prompts", t / "p", "--base-url", nowhere()]),
    "run --balance-with": ("prior/a.jsonl", lambda t: ["synth", "run", "--n", "1", "--out", t / "o", "--balance-with", t / "prior", "--base-url", nowhere()]),
    "clean": ("in.jsonl", lambda t: ["synth", "clean", t / "in.jsonl", "--out", t / "o"]),
}


# (--balance-with reads the regular *.jsonl files of a directory: a directory or pipe there is no input of it)
@pytest.mark.parametrize("command, kind", [(command, kind) for command in CASES for kind in ("directory", "named pipe", "not UTF-8", "no permission")
                                           if not (command == "run --balance-with" and kind in ("directory", "named pipe"))])
def test_an_input_file_that_cannot_be_read_is_one_clear_error(synth, tmp_path, monkeypatch, command, kind):
    name, args = CASES[command]
    path = tmp_path / name
    path.parent.mkdir(exist_ok=True)
    reason = _unreadable(path, kind, monkeypatch)
    _error(synth(*args(tmp_path)), f"{path}{reason}")
    assert not (tmp_path / "o" / "train_000.jsonl").exists() and not (tmp_path / "o.yaml").exists()


# 14: argument ranges, and a teacher server that cannot start -----------------------------

def _argparse_error(capsys, args, message):
    from sutra.cli import main

    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    stderr = capsys.readouterr().err
    assert exited.value.code == 2 and message in stderr and "Traceback" not in stderr, stderr


@pytest.mark.parametrize("value", ["-1", str(2**63)])
@pytest.mark.parametrize("command", [["synth", "run", "--n", "1"], ["synth", "rephrase", "in.jsonl"], ["synth", "graph", "expand"]])
def test_a_seed_out_of_range_is_refused(capsys, tmp_path, command, value):
    _argparse_error(capsys, [*command, "--out", tmp_path / "o.yaml", "--base-url", nowhere(), "--seed", value],
                    f"argument --seed: must be between 0 and 2**63 - 1, got {value}")


@pytest.mark.parametrize("value", ["99999", "-1", "0", "http"])
def test_serve_teacher_refuses_a_bad_port(capsys, value):
    _argparse_error(capsys, ["synth", "serve-teacher", "--port", value], "argument --port: must be")


def test_serve_teacher_says_why_the_model_cannot_be_served(synth, tmp_path):
    from sutra.synth.serve import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama.cpp's server (llama_cpp) cannot be imported")
    text = tmp_path / "model.gguf"
    text.write_text("not a model\n")
    _error(synth("synth", "serve-teacher", "--gguf", text, "--port", free_port()), f"{text}: not a GGUF model file")
    # GGUF's magic bytes, then junk: the real server starts and exits, and the end of its output says why
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + bytes(64))
    _error(synth("synth", "serve-teacher", "--gguf", junk, "--port", free_port(), "--threads", "1"),
           "llama.cpp server exited with code 1 while starting: ", "Failed to load model from file")
