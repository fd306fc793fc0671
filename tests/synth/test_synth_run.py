"""End-to-end `sutra synth` runs against the scripted OpenAI-compatible server (a real HTTP
server on loopback, see scripted_server.py): output schema, resume after a kill, a server that
dies mid-run, retries, several base URLs, keys, shards, rephrasing and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sutra.synth.cli import STOPPED_SHORT
from sutra.synth.serve import free_port
from sutra_testing import REPO, run_sutra
from synth_helpers import check_schema, journal, records, wait_for

ONE_AT_A_TIME = ["--min-tokens", "30", "--concurrency", "1"]
FAST = ["--min-tokens", "30", "--concurrency", "2"]


def test_run_writes_13_field_jsonl_and_stats_that_data_prepare_reads(scripted, synth, tmp_path, tokenizer):
    server = scripted("--only-json-object", "--log", str(tmp_path / "requests.log"))
    out = tmp_path / "synth"
    _, stdout, _ = synth("synth", "run", "--graph", "default", "--n", "6", "--out", out, "--base-url", server.url, *FAST, check=True)
    assert "accepted 6 item(s)" in stdout
    rows = records(out)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    for row in rows:
        check_schema(row, tokenizer)
    assert len({r["domain"] for r in rows}) == 6  # the planner spreads items over domains
    stats = json.loads((out / ".synth" / "stats.json").read_text())
    assert stats["entries"] == 6 and stats["tokens"] == sum(r["token_count"] for r in rows)
    assert sum(d["entries"] for d in stats["by_domain"]) == 6 and sum(d["entries"] for d in stats["by_content_type"]) == 6
    assert "## By domain" in (out / ".synth" / "stats.md").read_text()
    # The judge first asked in OpenAI's json_schema dialect, was refused (422), then used json_object + schema.
    formats = [json.loads(line)["response_format"] for line in (tmp_path / "requests.log").read_text().splitlines()]
    judged = [f for f in formats if f]
    dialects = [f["type"] for f in judged]
    tried = dialects.count("json_schema")  # one per request in flight when the first refusal came (concurrency 2)
    # each of those retries in json_object at once, so the refusals and their retries may interleave;
    # no request after them asks json_schema again
    assert 1 <= tried <= 2 and set(dialects) == {"json_schema", "json_object"}
    assert "json_schema" not in dialects[2 * tried:]
    assert all("schema" in f for f in judged if f["type"] == "json_object")

    # run again: finished, so no server is asked (this URL has none)
    code, _, stderr = synth("synth", "run", "--graph", "default", "--n", "6", "--out", out, "--base-url", f"http://127.0.0.1:{free_port()}/v1", *FAST)
    assert code == 0 and "already holds its target (6 items); nothing to generate" in stderr and len(records(out)) == 6

    prepared = run_sutra("data", "prepare", str(out), "--out", str(tmp_path / "prepared"), "--val-fraction", "0", "--workers", "1", check=True).stdout
    assert (tmp_path / "prepared" / "manifest.json").is_file()
    assert "input records                6" in prepared and "dropped                      0" in prepared


def _start_run(out, url, n, *extra):
    """A run one item at a time, to be stopped between items."""
    return subprocess.Popen(
        [sys.executable, "-m", "sutra", "synth", "run", "--n", str(n), "--out", str(out), "--base-url", url, *ONE_AT_A_TIME, *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_or_repeating_items(scripted, synth, tmp_path, tokenizer):
    server = scripted("--delay", "0.4")
    out = tmp_path / "synth"
    run = _start_run(out, server.url, 8)
    wait_for(lambda: len(records(out)) >= 3)
    run.send_signal(signal.SIGKILL)
    run.wait()
    before = (out / "train_000.jsonl").read_bytes()
    kept = before[: before.rfind(b"\n") + 1]
    with open(out / "train_000.jsonl", "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write(b'{"id": "half-written')
    _, stdout, stderr = synth("synth", "run", "--n", "8", "--out", out, "--base-url", server.url, *ONE_AT_A_TIME, check=True)
    assert "resuming train_000.jsonl" in stderr and "partial line(s) from a killed run cut off" in stderr
    rows = records(out)
    # this session's count, and the output's (the session's alone read as if the rest were lost)
    assert f"accepted {8 - len(kept.splitlines())} item(s)" in stdout and f"; {out} holds 8 in all, " in stdout, stdout
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    assert (out / "train_000.jsonl").read_bytes().startswith(kept)  # finished items were kept, not redone
    indices = [e["index"] for e in journal(out)]
    assert len(indices) == len(set(indices))
    for row in rows:
        check_schema(row, tokenizer)
    _, stdout, _ = synth("synth", "run", "--n", "8", "--out", out, "--base-url", server.url, *FAST, check=True)
    assert "accepted 0 item(s)" in stdout and len(records(out)) == 8


def _kill_server_mid_run(scripted, out, retries: int):
    """A 6-item run against a slow scripted server that is killed once 2 items are in: (port, the run)."""
    port = free_port()
    server = scripted("--delay", "0.3", port=port)
    run = _start_run(out, server.url, 6, "--retries", str(retries))
    wait_for(lambda: len(records(out)) >= 2)
    server.kill()
    return port, run


@pytest.mark.slow
def test_the_run_rides_out_a_server_that_is_killed_and_restarted(scripted, tmp_path):
    out = tmp_path / "synth"
    port, run = _kill_server_mid_run(scripted, out, retries=8)
    time.sleep(2.0)
    scripted("--delay", "0.3", port=port)
    stdout, stderr = run.communicate(timeout=180)
    assert run.returncode == 0, stderr
    rows = records(out)
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert "accepted" in stdout


@pytest.mark.slow
def test_a_server_that_stays_down_stops_the_run_cleanly_and_keeps_finished_items(scripted, synth, tmp_path):
    out = tmp_path / "synth"
    port, run = _kill_server_mid_run(scripted, out, retries=1)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "Traceback" not in stderr and "rerun the same command to resume" in stderr
    done = len(records(out))
    assert done >= 2
    restarted = scripted(port=port)
    synth("synth", "run", "--n", "6", "--out", out, "--base-url", restarted.url, *FAST, check=True)
    assert len({r["id"] for r in records(out)}) == len(records(out)) == 6


def test_unreachable_backend_is_one_clear_error(synth, tmp_path):
    code, _, stderr = synth("synth", "run", "--n", "2", "--out", tmp_path / "o", "--base-url", f"http://127.0.0.1:{free_port()}/v1")
    assert code == 2 and stderr.startswith("sutra: error:") and "server unreachable" in stderr and "sutra synth serve-teacher" in stderr


def test_retries_several_urls_and_keys_that_are_never_printed(scripted, synth, tmp_path):
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    first = scripted("--fail-first", "3", "--log", str(logs[0]))
    second = scripted("--log", str(logs[1]))
    out = tmp_path / "synth"
    secret = "sk-test-do-not-print-4242"
    _, stdout, stderr = synth("synth", "run", "--n", "4", "--out", out, "--base-url", f"{first.url},{second.url}", *FAST,
                              env={"SUTRA_SYNTH_API_KEY": secret}, check=True)
    assert len(records(out)) == 4 and "3 request(s) retried after a server error or timeout" in stdout  # (a flaky server was invisible)
    requests = [[json.loads(line) for line in log.read_text().splitlines()] for log in logs]
    assert all(len(r) >= 2 for r in requests)  # both servers took work
    assert all(r["auth"] == f"Bearer {secret}" for rs in requests for r in rs)
    assert secret not in stdout + stderr
    assert not any(secret in p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_a_server_slower_than_the_timeout_is_named_with_the_flag(scripted, synth, tmp_path):
    server = scripted("--delay", "2")
    code, _, stderr = synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--base-url", server.url, "--timeout", "0.5", "--retries", "0")
    assert code == 2 and "TimeoutError, no answer within --timeout 0.5 s); check that the server is running and reachable, " \
                         "or raise --timeout for a slow one" in stderr, stderr


def test_malformed_judge_answers_are_counted_rejects(scripted, synth, tmp_path):
    server = scripted("--judge", "bad")
    out = tmp_path / "synth"
    code, _, stderr = synth("synth", "run", "--n", "2", "--out", out, "--base-url", server.url, *FAST, "--max-attempts", "3", "--judge-retries", "1")
    assert code == STOPPED_SHORT and "stopped before the target (max attempts)" in stderr
    assert "Most judge answers were not the JSON asked for" in stderr  # not "lower --min-quality", which would not help
    assert records(out) == []
    stats = json.loads((out / ".synth" / "stats.json").read_text())
    assert stats["rejected"] == {"judge_invalid_json": 3}
    assert all(e["judge_error"] for e in journal(out))
    # a token target stops too: 5x the items it needs at the default length (1000 / 384 -> 3), plus 2 x concurrency
    code, _, stderr = synth("synth", "run", "--tokens", "1000", "--out", tmp_path / "by-tokens", "--base-url", server.url, *FAST, "--judge-retries", "0")
    assert code == STOPPED_SHORT and "stopped before the target (max attempts)" in stderr
    assert json.loads((tmp_path / "by-tokens" / ".synth" / "stats.json").read_text())["rejected"] == {"judge_invalid_json": 19}


def test_an_api_key_with_a_control_character_is_one_message_that_never_shows_it(scripted, synth, tmp_path):
    """A key read from a file with its line end was "server unreachable (ValueError: ...)"."""
    server = scripted()
    code, stdout, stderr = synth("synth", "run", "--n", "1", "--out", tmp_path / "o", "--base-url", server.url, *FAST,
                                 env={"SUTRA_SYNTH_API_KEY": "sk-secret-4242\r"})
    assert code == 2 and "the API key (--api-key or the environment) holds a control character" in stderr, stderr
    assert "sk-secret" not in stdout + stderr


def test_a_separate_judge_server_never_gets_the_generator_key(scripted, synth, tmp_path):
    logs = [tmp_path / "generator.log", tmp_path / "judge.log"]
    generator, judge = scripted("--log", str(logs[0])), scripted("--log", str(logs[1]))
    secret = "sk-generator-only-4242"
    synth("synth", "run", "--n", "2", "--out", tmp_path / "synth", "--base-url", generator.url, "--judge-base-url", judge.url, *FAST,
          env={"SUTRA_SYNTH_API_KEY": secret}, check=True)
    sent = [[json.loads(line)["auth"] for line in log.read_text().splitlines()] for log in logs]
    assert sent[0] and all(auth == f"Bearer {secret}" for auth in sent[0])
    assert sent[1] and not any(secret in (auth or "") for auth in sent[1])
    # the judge's answer length is the user's to raise (a judge that reasons before its JSON needs more than 96)
    synth("synth", "run", "--n", "1", "--out", tmp_path / "longer", "--base-url", generator.url, "--judge-base-url", judge.url, *FAST,
          "--judge-max-tokens", "512", check=True)
    assert json.loads(logs[1].read_text().splitlines()[-1])["max_tokens"] == 512
    assert {json.loads(line)["max_tokens"] for line in logs[0].read_text().splitlines()} == {768}  # the generator's is --max-new-tokens


def test_shards_split_the_plan_deterministically(scripted, synth, tmp_path):
    server = scripted()
    out = tmp_path / "synth"
    for shard in ("0/2", "1/2"):
        synth("synth", "run", "--n", "5", "--shard", shard, "--out", out, "--base-url", server.url, *FAST, check=True)
    first, second = records(out, 0), records(out, 1)
    assert (len(first), len(second)) == (3, 2)
    assert not {r["id"] for r in first} & {r["id"] for r in second}
    assert {e["index"] % 2 for e in journal(out, 0)} == {0} and {e["index"] % 2 for e in journal(out, 1)} == {1}
    single = tmp_path / "single"
    synth("synth", "run", "--n", "5", "--out", single, "--base-url", server.url, *FAST, check=True)
    assert {r["id"] for r in records(single)} == {r["id"] for r in first + second}  # the same global plan
    assert "| Entries | 5 |" in synth("synth", "stats", out, check=True)[1]
    assert json.loads(synth("synth", "stats", out, "--json", check=True)[1]) == json.loads((out / ".synth" / "stats.json").read_text())
    code, _, stderr = synth("synth", "run", "--n", "5", "--shard", "0/2", "--seed", "7", "--out", out, "--base-url", server.url)
    assert code == 2 and "different settings (seed: 0 then, 7 now)" in stderr
    # shards of one --out are one run: another split (it redid items shard 0 had made) or other settings are refused
    code, _, stderr = synth("synth", "run", "--n", "5", "--shard", "2/3", "--out", out, "--base-url", server.url, *FAST)
    assert code == 2 and "holds shard 0/2 of a run with other settings (shard: '0/2' there, '2/3' here)" in stderr, stderr
    assert not (out / "train_002.jsonl").exists()
    other = tmp_path / "other"
    synth("synth", "run", "--n", "4", "--shard", "0/2", "--out", other, "--base-url", server.url, *FAST, check=True)
    code, _, stderr = synth("synth", "run", "--n", "4", "--shard", "1/2", "--temperature", "0.3", "--out", other, "--base-url", server.url, *FAST)
    assert code == 2 and "holds shard 0/2 of a run with other settings (temperature: 0.8 there, 0.3 here)" in stderr, stderr


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r.update(token_count="120"), "train_000.jsonl:1: the record's 'token_count' is \"120\", not a whole number"),
    (lambda r: r.update(text=None), "train_000.jsonl:1: the record's 'text' is null, not text"),
])
def test_a_resume_over_an_edited_record_is_one_message(scripted, synth, tmp_path, edit, problem):
    """A string token_count or a null text in the data file was a TypeError traceback on resume."""
    server = scripted()
    out = tmp_path / "synth"
    synth("synth", "run", "--n", "1", "--out", out, "--base-url", server.url, *FAST, check=True)
    record = records(out)[0]
    edit(record)
    (out / "train_000.jsonl").write_text(json.dumps(record) + "\n")
    code, _, stderr = synth("synth", "run", "--n", "2", "--out", out, "--base-url", server.url, *FAST)
    assert code == 2 and f"{problem}; this file was edited" in stderr and "Traceback" not in stderr, stderr


def test_a_server_that_refuses_every_request_stops_the_run_with_its_message(scripted, synth, tmp_path):
    """It tried 5x the target (258 requests for --n 50), every one refused for the same reason."""
    server = scripted("--too-long", "Rate this")  # every judge request: 400 "maximum context length"
    out = tmp_path / "synth"
    code, _, stderr = synth("synth", "run", "--n", "50", "--out", out, "--base-url", server.url, *FAST)
    assert code == 2 and re.search(r"the server refused (8|9|10) requests in a row, so it would refuse every one", stderr), stderr
    assert "maximum context length is 2048 tokens" in stderr and "--max-new-tokens, with a new --out" in stderr
    assert 8 <= len(journal(out)) <= 8 + 2  # (the items in flight finish)


def test_items_of_another_plan_have_their_own_ids(scripted, synth, tmp_path):
    """A --balance-with run (or one of a subset of content types) gave other items the ids of the run
    it complements: a merged dataset held one id for two texts. A resume keeps each run's ids."""
    server = scripted()
    runs = {name: tmp_path / name for name in ("default", "balanced", "tutorials")}
    synth("synth", "run", "--n", "3", "--out", runs["default"], "--base-url", server.url, *FAST, check=True)
    synth("synth", "run", "--n", "3", "--out", runs["balanced"], "--balance-with", runs["default"], "--base-url", server.url, *FAST, check=True)
    synth("synth", "run", "--n", "3", "--out", runs["tutorials"], "--content-types", "tutorial", "--base-url", server.url, *FAST, check=True)
    ids = {name: {r["id"] for r in records(out)} for name, out in runs.items()}
    assert all(len(v) == 3 for v in ids.values())
    assert not ids["default"] & ids["balanced"] and not ids["default"] & ids["tutorials"] and not ids["balanced"] & ids["tutorials"]
    synth("synth", "run", "--n", "5", "--out", runs["balanced"], "--balance-with", runs["default"], "--base-url", server.url, *FAST, check=True)
    resumed = [r["id"] for r in records(runs["balanced"])]
    assert len(resumed) == len(set(resumed)) == 5 and ids["balanced"] <= set(resumed)
    # a default run's ids are as they were (its seed, graph and index), so older runs resume as they were made
    synth("synth", "run", "--n", "3", "--out", tmp_path / "again", "--base-url", server.url, *FAST, check=True)
    assert {r["id"] for r in records(tmp_path / "again")} == ids["default"]
    # and a shard begun before ids carried the plan (its manifest lacks plan_ids) goes on with ids of (graph, seed, index)
    manifest = runs["tutorials"] / ".synth" / "shard_000.json"
    begun = json.loads(manifest.read_text())
    del begun["plan_ids"]
    manifest.write_text(json.dumps(begun))
    synth("synth", "run", "--n", "5", "--out", runs["tutorials"], "--content-types", "tutorial", "--base-url", server.url, *FAST, check=True)
    synth("synth", "run", "--n", "6", "--out", tmp_path / "again", "--base-url", server.url, *FAST, check=True)
    added = {r["id"] for r in records(runs["tutorials"])} - ids["tutorials"]
    assert len(added) == 2 and added <= {r["id"] for r in records(tmp_path / "again")} - ids["default"]


def test_a_token_target_is_not_overshot_by_the_items_in_flight(scripted, synth, tmp_path):
    """Items in flight count at the accepted items' length, as an item target counts them: with 8 in
    flight, 1,500 tokens once took 12 items (4,251 tokens)."""
    server = scripted()
    out = tmp_path / "synth"
    synth("synth", "run", "--tokens", "1500", "--out", out, "--base-url", server.url, "--min-tokens", "30", "--concurrency", "8", check=True)
    lengths = [r["token_count"] for r in records(out)]
    assert 1500 <= sum(lengths) < 1500 + 2 * max(lengths)


def test_one_process_writes_a_shard_at_a_time(scripted, synth, tmp_path):
    """Two runs of one shard both made and appended the same items (16 records, 8 ids)."""
    server = scripted("--delay", "0.3")
    out = tmp_path / "synth"
    first = subprocess.Popen([sys.executable, "-m", "sutra", "synth", "run", "--n", "6", "--out", str(out), "--base-url", server.url, *FAST],
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (out / ".synth" / "shard_000.lock").exists(), 60)
        code, _, stderr = synth("synth", "run", "--n", "6", "--out", out, "--base-url", server.url, *FAST)
        assert code == 2 and f"{out} (shard 0) is in use by sutra synth (pid {first.pid}); wait for it to finish" in stderr, stderr
        assert first.wait(timeout=120) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    ids = [r["id"] for r in records(out)]
    assert len(ids) == len(set(ids)) == 6
    assert not (out / ".synth" / "shard_000.lock").exists()
    synth("synth", "run", "--n", "6", "--out", out, "--base-url", server.url, *FAST, check=True)  # and the shard is free again


def test_another_shard_writing_its_last_line_does_not_fail_this_one(scripted, synth, tmp_path):
    """stats.json covers every shard: a line another shard is writing (no newline yet) failed this
    shard's run after all its work, as "the file was edited or corrupted"."""
    server = scripted()
    out = tmp_path / "synth"
    synth("synth", "run", "--n", "4", "--shard", "1/2", "--out", out, "--base-url", server.url, *FAST, check=True)
    with open(out / "train_001.jsonl", "a") as f:
        f.write('{"id": "half-writ')
    code, _, stderr = synth("synth", "run", "--n", "4", "--shard", "0/2", "--out", out, "--base-url", server.url, *FAST)
    assert code == 0, stderr
    assert json.loads((out / ".synth" / "stats.json").read_text())["entries"] == 4
    assert (out / "train_001.jsonl").read_text().endswith('{"id": "half-writ')  # shard 1's own to repair when it resumes


def test_a_shard_never_keeps_what_another_shard_of_its_out_has(scripted, synth, tmp_path):
    """Each shard's deduplicator knew only its own file: two shards kept one text twice."""
    server = scripted("--same-text")
    out = tmp_path / "synth"
    synth("synth", "run", "--n", "2", "--shard", "0/2", "--out", out, "--base-url", server.url, *FAST, check=True)
    synth("synth", "run", "--n", "2", "--shard", "1/2", "--max-attempts", "2", "--out", out, "--base-url", server.url, *FAST)
    assert len(records(out, 0)) == 1 and not (out / "train_001.jsonl").read_text().strip()
    assert {e["reason"] for e in journal(out, 1)} == {"exact_duplicate"}


def test_rephrase_rewrites_sources_and_counts_unreadable_records(scripted, synth, tmp_path, tokenizer):
    server = scripted()
    source = tmp_path / "web.jsonl"
    source.write_text(
        json.dumps({"text": "Ohm's law relates voltage, current and resistance in a circuit.\n\nDoubling the resistance halves the current."}) + "\n"
        + "{not json\n" + json.dumps({"url": "no text here"}) + "\n"
        + json.dumps({"text": "The Calvin cycle fixes carbon dioxide into sugar inside the chloroplast."}) + "\n"
    )
    out = tmp_path / "rephrased"
    _, stdout, stderr = synth("synth", "rephrase", source, "--out", out, "--base-url", server.url, *FAST,
                              "--content-types", "tutorial,qa_pairs", "--styles", "faq", check=True)
    assert "2 document(s) read" in stdout and "skipped 2 unreadable source record(s)" in stderr
    rows = records(out)
    by_source = {e["source"]: e["content_type"] for e in journal(out)}  # requests run concurrently: any finishing order
    assert by_source == {f"{source}:1": "tutorial", f"{source}:4": "qa_pairs"}
    assert sorted(r["content_type"] for r in rows) == ["qa_pairs", "tutorial"]
    for row in rows:
        check_schema(row, tokenizer)
        assert row["domain"] == "Mathematics" and row["concept_name"] == "Fractions"  # the scripted annotator's labels
    # the same document three times, one content type and style, all in flight at once: three items, no id clash
    repeated = tmp_path / "repeated.jsonl"
    repeated.write_text(json.dumps({"text": "Ohm's law relates voltage, current and resistance in a circuit."}) + "\n" * 1)
    repeated.write_text(repeated.read_text() * 3)
    synth("synth", "rephrase", repeated, "--out", tmp_path / "again", "--base-url", server.url, "--min-tokens", "30", "--concurrency", "3",
          "--content-types", "tutorial", "--styles", "faq", check=True)
    assert len({e["id"] for e in journal(tmp_path / "again")}) == 3
    # sources where no record has a text (another field name): an error, not "0 document(s) read" and exit 0
    untexted = tmp_path / "untexted.jsonl"
    untexted.write_text(json.dumps({"content": "Ohm's law relates voltage and current."}) + "\n")
    code, _, stderr = synth("synth", "rephrase", untexted, "--out", tmp_path / "none", "--base-url", server.url, *FAST)
    assert code == 2 and "no source record could be rephrased: 1 unreadable source record(s) (no_text 1)" in stderr, stderr


def test_rephrase_never_reads_its_own_output_inside_a_source_directory(scripted, synth, tmp_path):
    """`rephrase web/ --out web/rephrased`, run again for more: its first items were read back as
    sources and rephrased again."""
    server = scripted()
    (tmp_path / "web").mkdir()
    texts = ["Ohm's law relates voltage, current and resistance in a circuit.", "The Calvin cycle fixes carbon dioxide into sugar."]
    (tmp_path / "web" / "pages.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "web" / "rephrased"
    common = ["--out", out, "--base-url", server.url, *FAST, "--content-types", "tutorial", "--styles", "faq"]
    synth("synth", "rephrase", tmp_path / "web", "--n", "1", *common, check=True)
    _, stdout, _ = synth("synth", "rephrase", tmp_path / "web", *common, check=True)
    assert "2 document(s) read" in stdout
    assert {e["source"] for e in journal(out)} == {f"{tmp_path / 'web' / 'pages.jsonl'}:{line}" for line in (1, 2)}


def test_graph_expand_adds_only_validated_concepts(scripted, synth, tmp_path):
    server = scripted()
    _, stdout, _ = synth("synth", "graph", "expand", "--concepts", "fractions", "--out", tmp_path / "g.yaml", "--base-url", server.url, check=True)
    assert "1 concept(s) added" in stdout and "added 1, duplicate 1" in stdout
    assert synth("synth", "graph", "stats", tmp_path / "g.yaml", check=True)[1].startswith(f"graph {tmp_path / 'g.yaml'}: 50 concepts")
    counts = json.loads(synth("synth", "graph", "stats", tmp_path / "g.yaml", "--json", check=True)[1])
    assert counts["concepts"] == 50 and counts["graph"] == str(tmp_path / "g.yaml") and sum(counts["by_domain"].values()) == 50
    code, _, stderr = synth("synth", "graph", "expand", "--concepts", "no-such-id", "--out", tmp_path / "h.yaml", "--base-url", server.url)
    assert code == 2 and "unknown id(s) no-such-id" in stderr


def test_bad_graph_and_bad_flags_fail_before_any_request(synth, tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text("concepts:\n  - {id: a, name: A, domain: Mathematics, complexity: 2, prerequisites: [b]}\n")
    code, _, stderr = synth("synth", "run", "--graph", graph, "--n", "1", "--out", tmp_path / "o", "--base-url", "http://127.0.0.1:9/v1")
    assert code == 2 and "lists unknown id 'b'" in stderr
    code, _, stderr = synth("synth", "run", "--n", "1", "--shard", "3/2", "--out", tmp_path / "o")
    assert code == 2 and "--shard '3/2'" in stderr
    assert not os.path.exists(tmp_path / "o" / "train_000.jsonl")


def test_a_rejected_request_does_not_switch_off_the_json_dialect(scripted, tmp_path):
    """A 400 for a prompt that is too long is not a refused dialect: the next request still asks for
    OpenAI's json_schema (only a later dialect's success drops one)."""
    import asyncio

    from sutra.synth.backends import OpenAIBackend, RequestRejected

    log = tmp_path / "requests.log"
    server = scripted("--too-long", "OVERSIZED", "--log", str(log))
    schema = {"type": "object", "properties": {"clarity": {"type": "number"}}}

    async def run():
        backend = OpenAIBackend([server.url], retries=0)
        try:
            with pytest.raises(RequestRejected, match="maximum context length"):
                await backend.complete([{"role": "user", "content": "Rate this OVERSIZED text"}], 16, json_schema=schema)
            await backend.complete([{"role": "user", "content": "Rate this text"}], 16, json_schema=schema)
        finally:
            await backend.close()

    asyncio.run(run())
    dialects = [(json.loads(line)["response_format"] or {}).get("type") for line in log.read_text().splitlines()]
    assert dialects == ["json_schema", "json_object", None, "json_schema"], "every dialect tried once, then back to the first"


@pytest.mark.parametrize("how", ["one flag", "repeated flag", "environment"])
def test_every_url_of_a_comma_separated_list_gets_its_concurrency(scripted, synth, tmp_path, how):
    """--concurrency 1 with two servers named in one --base-url, in two (as the README shows), or in
    SUTRA_SYNTH_BASE_URL keeps two items in flight: requests overlap (each takes DELAY, so serial
    ones arrive at least DELAY apart), and both servers take work."""
    delay = 0.6
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    servers = [scripted("--delay", str(delay), "--log", str(log)) for log in logs]
    urls = f"{servers[0].url},{servers[1].url}"
    where = {"one flag": ["--base-url", urls], "repeated flag": ["--base-url", servers[0].url, "--base-url", servers[1].url],
             "environment": []}[how]
    synth("synth", "run", "--n", "2", "--out", tmp_path / "synth", *where, "--min-tokens", "30", "--concurrency", "1",
          env={} if where else {"SUTRA_SYNTH_BASE_URL": urls}, check=True)
    assert all(log.exists() and log.read_text().strip() for log in logs), "each server took work"
    arrivals = sorted(json.loads(line)["t"] for log in logs for line in log.read_text().splitlines())
    assert len(arrivals) >= 4  # a generation and a judgement per item
    assert min(b - a for a, b in zip(arrivals, arrivals[1:])) < delay / 2


def test_redact_hides_url_passwords_and_secret_query_values():
    from sutra.synth.backends import redact

    assert redact("http://bob:hunter2@h:8/v1?api_key=S1&n=2&access_token=S2") == "http://bob:***@h:8/v1?api_key=***&n=2&access_token=***"
    assert redact("no answer from 'https://u:p@ss@a/v1', http://b:80/v1?sig=zz#x") == "no answer from 'https://u:***@a/v1', http://b:80/v1?sig=***#x"
    assert redact("bob:pw@host/v1") == "bob:***@host/v1"  # no scheme: still a password
    assert redact("http://h/v1?key=sk-1: HTTP 400") == "http://h/v1?key=***: HTTP 400"  # the message's colon stays
    assert redact("at https://ghp_T0KEN@h/v1: refused") == "at https://***@h/v1: refused"  # a token as the user name
    for harmless in ("http://127.0.0.1:8765/v1", "http://h/v1?model=x&page=2", "see http://h:80/a@b", "http://h/a@b"):
        assert redact(harmless) == harmless


@pytest.mark.parametrize("listing", ['[{"id": "m"}]', '{"data": [1]}', '{"data": [{"id": 7}]}', '{"data": "m"}', 'null'])
def test_an_odd_model_listing_names_no_model_but_a_given_model_still_runs(scripted, synth, tmp_path, listing):
    server = scripted("--models-body", listing)
    code, _, stderr = synth("synth", "run", "--n", "1", "--out", tmp_path / "o1", "--base-url", server.url, *FAST)
    assert code == 2 and "the server lists no models; pass --model" in stderr and "Traceback" not in stderr
    code, _, stderr = synth("synth", "run", "--n", "1", "--out", tmp_path / "o2", "--base-url", server.url, "--model", "scripted-teacher", *FAST)
    assert code == 0, stderr


def test_credentials_in_base_urls_reach_the_server_but_are_never_shown(scripted, synth, tmp_path, monkeypatch):
    import base64

    for name in ("SUTRA_SYNTH_API_KEY", "OPENAI_API_KEY"):  # the URL carries the credentials here
        monkeypatch.delenv(name, raising=False)
    log = tmp_path / "requests.log"
    server = scripted("--fail-first", "1", "--too-long", "Rate this", "--log", str(log))
    url = f"http://bob:hunter2@127.0.0.1:{server.port}/v1?api_key=sk-query-4242"
    shown = f"http://bob:***@127.0.0.1:{server.port}/v1?api_key=***"
    # a 503 with no retries stops the run: the error names the server
    code, stdout, stderr = synth("synth", "run", "--n", "1", "--out", tmp_path / "o1", "--base-url", url, *FAST, "--retries", "0")
    assert code == 2 and f"no answer from {shown} after 1 attempts (last error: HTTP 503" in stderr
    # a judge request refused (400) rejects the item: the journal names the server
    code, more_out, more_err = synth("synth", "run", "--n", "1", "--out", tmp_path / "o2", "--base-url", url, *FAST, "--max-attempts", "1")
    assert code == STOPPED_SHORT and journal(tmp_path / "o2")[0]["detail"].startswith(f"{shown}: HTTP 400")
    code, _, bad_scheme = synth("synth", "run", "--n", "1", "--out", tmp_path / "o3", "--base-url", "ftp://bob:hunter2@127.0.0.1/v1")
    assert code == 2 and "'ftp://bob:***@127.0.0.1/v1' is not an http(s) URL" in bad_scheme
    code, _, both = synth("synth", "run", "--n", "1", "--out", tmp_path / "o4", "--base-url", url, env={"SUTRA_SYNTH_API_KEY": "sk-4242"})
    assert code == 2 and "carries a password and an API key is set too" in both
    printed = stdout + stderr + more_out + more_err + bad_scheme + both
    written = "".join(p.read_text(errors="replace") for p in tmp_path.glob("o*/**/*") if p.is_file())
    assert not any(secret in printed + written for secret in ("hunter2", "sk-query-4242"))
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    assert requests and all(r["auth"] == "Basic " + base64.b64encode(b"bob:hunter2").decode() for r in requests)
    assert all(r["path"] == "/v1/chat/completions?api_key=sk-query-4242" for r in requests)


def test_odd_completions_are_retried_then_stop_with_what_was_wrong(scripted, tmp_path):
    import asyncio

    from sutra.synth.backends import BackendError, OpenAIBackend
    from scripted_server import ODD_ANSWERS

    log = tmp_path / "requests.log"
    server = scripted("--odd", "--log", str(log))
    problems = {
        "usage-not-numbers": "usage token counts are not whole numbers", "usage-not-object": "usage token counts are not whole numbers",
        "content-not-text": "message.content is int, not a string", "finish-not-text": "finish_reason is int, not a string",
        "not-an-object": "no choices", "no-choices": "no choices", "no-message": "choices[0] has no message",
    }

    async def ask(backend, prompt):
        return await backend.complete([{"role": "user", "content": prompt}], 16)

    async def run():
        backend = OpenAIBackend([server.url], model="m", retries=1, backoff=0)
        try:
            for kind, problem in problems.items():
                with pytest.raises(BackendError) as caught:
                    await ask(backend, kind)
                assert f"after 2 attempts (last error: {server.url}: not an OpenAI chat completion ({problem})" in str(caught.value), kind
            return await ask(backend, "null-usage"), await ask(backend, "null-content"), await ask(backend, "lone-surrogate")
        finally:
            await backend.close()

    no_usage, no_content, half_emoji = asyncio.run(run())
    # a lone surrogate is no character: the tokenizer refused it with a traceback, on every re-run
    assert half_emoji.text == "half an emoji \ufffd here"
    # odd but valid: missing counts are 0, a null content is an empty answer (rejected as "empty" downstream)
    assert (no_usage.text, no_usage.prompt_tokens, no_usage.completion_tokens, no_usage.finish_reason) == ("x", 0, 0, "length")
    assert (no_content.text, no_content.prompt_tokens, no_content.completion_tokens, no_content.finish_reason) == ("", 3, 0, "stop")
    assert len(log.read_text().splitlines()) == 2 * len(problems) + 3  # each malformed answer was retried once
    assert set(problems) | {"null-usage", "null-content", "lone-surrogate"} == set(ODD_ANSWERS)


@pytest.mark.parametrize("command, flag, value, message", [
    ("run", "--timeout", "0", "must be a positive number of seconds, got '0'"),
    ("run", "--timeout", "-5", "must be a positive number of seconds"),
    ("run", "--timeout", "nan", "must be a positive number of seconds"),
    ("run", "--retries", "-1", "must be 0 or more, got -1"),
    ("run", "--judge-retries", "-1", "must be 0 or more"),
    ("expand", "--judge-retries", "-2", "must be 0 or more"),
    ("run", "--retries", "two", "must be a whole number, got 'two'"),
    ("run", "--max-attempts", "0", "must be at least 1, got 0"),
])
def test_bad_timeouts_and_retry_counts_are_refused_by_the_parser(capsys, tmp_path, command, flag, value, message):
    from sutra.cli import main

    base = ["synth", "run", "--n", "1", "--out", str(tmp_path)] if command == "run" else ["synth", "graph", "expand", "--out", str(tmp_path / "g.yaml")]
    with pytest.raises(SystemExit) as exited:
        main([*base, "--base-url", f"http://127.0.0.1:{free_port()}/v1", flag, value])
    assert exited.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("flags, expected, notice", [
    (["--backend", "transformers"], 0.0, True),
    (["--backend", "llama-cpp"], 0.0, True),
    (["--backend", "llama-cpp", "--judge-model", "x"], 0.0, True),  # still the teacher's one server
    (["--backend", "transformers", "--local-model", "runs/big/last"], 0.5, False),
    (["--backend", "llama-cpp", "--judge-base-url", "http://127.0.0.1:9/v1"], 0.5, False),
    (["--base-url", "http://127.0.0.1:9/v1"], 0.5, False),
    (["--backend", "transformers", "--min-quality", "0.3"], 0.3, False),
])
def test_the_default_quality_gate_is_off_only_when_the_builtin_teacher_judges(flags, expected, notice, capsys, tmp_path, monkeypatch):
    """The 135M teacher cannot judge (README, Known limits): at 0.5 it kept about 1 item in 18."""
    from sutra.cli import build_parser
    from sutra.synth.cli import _backend_options, _run_options

    for name in ("SUTRA_SYNTH_BASE_URL", "OPENAI_BASE_URL", "SUTRA_JUDGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["synth", "run", "--n", "1", "--out", str(tmp_path), *flags])
    run = _run_options(args, _backend_options(args), n_items=1)
    assert run.settings.min_quality == expected
    assert ("sutra: --min-quality 0: the built-in 135M teacher is the judge" in capsys.readouterr().err) == notice


def test_a_resume_with_other_prompts_seed_sampling_filters_or_model_is_refused(scripted, synth, tmp_path):
    """A rephrase run's settings record lacked its seed, sampling, prompts, length and duplicate
    filters and model: resuming with any of them changed mixed two ways of making the texts in one --out."""
    server = scripted()
    source = tmp_path / "web.jsonl"
    source.write_text("".join(json.dumps({"text": f"Ohm's law, case {i}: voltage equals current times resistance."}) + "\n" for i in range(3)))
    out = tmp_path / "rephrased"
    common = ["--out", out, "--base-url", server.url, "--concurrency", "2", "--content-types", "tutorial", "--styles", "faq"]
    min_tokens = ["--min-tokens", "30"]  # (a flag is given once: the case that changes it leaves this out)
    synth("synth", "rephrase", source, "--n", "1", *common, *min_tokens, check=True)
    prompts = tmp_path / "prompts"
    synth("synth", "prompts", "--export", prompts, check=True)
    (prompts / "rephrase.yaml").write_text((prompts / "rephrase.yaml").read_text().replace("Rewrite", "Please rewrite", 1))
    for extra, changed in ((["--prompts", prompts], "prompts: "), (["--seed", "3"], "seed: 0 then, 3 now"),
                           (["--temperature", "0.2"], "temperature: 0.8 then, 0.2 now"),
                           (["--min-tokens", "40"], "min_tokens: 30 then, 40 now"), (["--max-tokens", "999"], "max_tokens: 4096 then, 999 now"),
                           (["--dedup-threshold", "0.5"], "dedup_threshold: 0.8 then, 0.5 now"), (["--model", "other"], "model: None then, 'other' now")):
        code, _, stderr = synth("synth", "rephrase", source, "--n", "2", *common, *([] if "--min-tokens" in extra else min_tokens), *extra)
        assert code == 2 and f"different settings ({changed}" in stderr, stderr
    assert len(records(out)) == 1  # nothing was added by the refused runs
    synth("synth", "rephrase", source, "--n", "2", *common, *min_tokens, check=True)
    assert len(records(out)) == 2


def test_a_run_that_made_no_item_binds_no_settings_and_records_the_model_however_named(scripted, synth, tmp_path):
    """A run stopped before its first item (its server unreachable, a mistyped --model) had recorded
    its settings, so the corrected command with another flag was refused; and a model named through
    SUTRA_SYNTH_MODEL was recorded as None, so another model resumed the run unnoticed."""
    server = scripted()
    out = tmp_path / "synth"
    code, _, stderr = synth("synth", "run", "--n", "1", "--out", out, "--base-url", f"http://127.0.0.1:{free_port()}/v1", *FAST)
    assert code == 2 and (out / ".synth" / "shard_000.json").is_file(), stderr
    synth("synth", "run", "--n", "1", "--out", out, "--base-url", server.url, *FAST, "--temperature", "0.5", env={"SUTRA_SYNTH_MODEL": "model-a"},
          check=True)
    code, _, stderr = synth("synth", "run", "--n", "2", "--out", out, "--base-url", server.url, *FAST, "--temperature", "0.5",
                            env={"SUTRA_SYNTH_MODEL": "model-b"})
    assert code == 2 and "different settings (model: 'model-a' then, 'model-b' now)" in stderr, stderr
    synth("synth", "run", "--n", "2", "--out", out, "--base-url", server.url, *FAST, "--temperature", "0.5", "--model", "model-a", check=True)
    assert len(records(out)) == 2


def test_items_the_server_refused_are_asked_again_by_the_next_run(scripted, synth, tmp_path):
    """A run stopped by a server refusing request after request (its context limit) journalled
    each refused item as done: the rerun after the server was fixed left those items out, rephrase's
    source chunks among them, and reported success."""
    source = tmp_path / "web.jsonl"
    source.write_text("".join(json.dumps({"text": f"Ohm's law, case {i}: voltage equals current times resistance in a circuit."}) + "\n"
                              for i in range(12)))
    out = tmp_path / "rephrased"
    refusing = scripted("--too-long", "Rate this")  # every judge request: 400 "maximum context length"
    args = ["synth", "rephrase", source, "--out", out, *FAST, "--content-types", "tutorial", "--styles", "faq"]
    code, _, stderr = synth(*args, "--base-url", refusing.url)
    assert code == 2 and "requests in a row" in stderr, stderr
    refused = {e["id"] for e in journal(out)}
    assert refused and all(e["reason"] == "request_refused" for e in journal(out))
    refusing.kill()
    fixed = scripted(port=refusing.port)
    code, _, stderr = synth(*args, "--base-url", fixed.url)
    assert code == 0 and f"0 accepted and 0 rejected item(s) already done, {len(refused)} refused by the server, to be asked again" in stderr, stderr
    assert refused <= {r["id"] for r in records(out)} and len(records(out)) == 12  # every chunk, once
    stats = json.loads((out / ".synth" / "stats.json").read_text())
    assert stats["entries"] == 12 and stats["rejected"] == {} and stats["acceptance_rate"] == 1.0  # each item counted by its last try


def test_a_rephrase_resumed_over_changed_sources_is_refused(scripted, synth, tmp_path):
    """Items are numbered by their place in the sources: a record put first shifted every number,
    and the resume rephrased documents it had done (7 records for 5 documents), exit 0."""
    server = scripted()
    source = tmp_path / "web.jsonl"
    lines = [json.dumps({"text": f"Ohm's law, case {i}: voltage equals current times resistance in a circuit."}) + "\n" for i in range(4)]
    source.write_text("".join(lines))
    out = tmp_path / "rephrased"
    args = ["synth", "rephrase", source, "--out", out, "--base-url", server.url, *FAST, "--content-types", "tutorial", "--styles", "faq"]
    synth(*args, "--n", "2", check=True)
    source.write_text(json.dumps({"text": "Kirchhoff's current law: the currents into a node sum to zero in every circuit."}) + "\n" + "".join(lines))
    code, _, stderr = synth(*args)
    assert code == 2 and "different settings (sources_digest: " in stderr and "a resume would rephrase some documents twice" in stderr, stderr
    assert len(records(out)) == 2  # nothing added
    source.write_text("".join(lines))  # restored: the run continues
    synth(*args, check=True)
    assert len(records(out)) == 4 and len({r["text"] for r in records(out)}) == 4


def test_a_rephrase_of_every_document_that_accepts_none_stops_short_and_names_the_cut_judge(scripted, synth, tmp_path):
    """With no --n, a rephrase whose every judge answer was unusable exited 0 ("target reached"),
    and an answer cut at --judge-max-tokens read as a judge that cannot follow the format."""
    server = scripted("--judge", "cut")
    source = tmp_path / "web.jsonl"
    source.write_text("".join(json.dumps({"text": f"Ohm's law, case {i}: voltage equals current times resistance in a circuit."}) + "\n"
                              for i in range(3)))
    code, _, stderr = synth("synth", "rephrase", source, "--out", tmp_path / "out", "--base-url", server.url, *FAST)
    assert code == STOPPED_SHORT and "none of the 3 item(s) tried was accepted" in stderr and "raise --judge-max-tokens" in stderr, stderr
    assert all(e["judge_error"] == "no JSON object in the answer (the answer was cut off at 96 tokens)" for e in journal(tmp_path / "out"))


def test_a_rephrase_of_empty_sources_is_an_error(scripted, synth, tmp_path):
    server = scripted()
    (tmp_path / "empty.jsonl").write_text("")
    code, _, stderr = synth("synth", "rephrase", tmp_path / "empty.jsonl", "--out", tmp_path / "out", "--base-url", server.url)
    assert code == 2 and stderr.endswith(f"sutra: error: {tmp_path / 'empty.jsonl'}: no document to rephrase (the sources are empty); " \
                                   "give files with text in them\n"), stderr  # (it exited 0: "0 document(s) read")


def test_a_rephrase_of_a_missing_source_leaves_no_run_to_block_the_corrected_one(scripted, synth, tmp_path):
    """The missing file was found only once the server was up and the run's settings recorded, so the
    corrected command was refused as "a run with different settings (sources: ...)"."""
    server = scripted()
    out = tmp_path / "rephrased"
    common = ["--out", out, "--base-url", server.url, *FAST, "--content-types", "tutorial", "--styles", "faq"]
    code, _, stderr = synth("synth", "rephrase", tmp_path / "nothere.jsonl", *common)
    assert code == 2 and "nothere.jsonl" in stderr and not (out / ".synth").exists(), stderr
    source = tmp_path / "web.jsonl"
    source.write_text(json.dumps({"text": "Ohm's law relates voltage, current and resistance in a circuit."}) + "\n")
    synth("synth", "rephrase", source, *common, check=True)
    assert len(records(out)) == 1


def test_a_record_the_disk_cannot_hold_leaves_no_half_line(tmp_path):
    """A write that failed part-way (a full disk) left half a record at the end of train_000.jsonl
    until a resume cut it off: `sutra data prepare` meanwhile dropped it as malformed JSON."""
    import resource

    from sutra.synth.journal import SCHEMA_FIELDS, ShardFiles

    files = ShardFiles(tmp_path / "out")
    files.open({"kind": "test"})
    record = dict.fromkeys(SCHEMA_FIELDS, "x") | {"id": "a"}
    files.accept(record, {"id": "a"})
    before = files.data_path.read_bytes()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    ignored = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 1000, limits[1]))
    try:
        with pytest.raises(OSError, match="File too large"):
            files.accept(record | {"id": "b", "text": "a long text " * 1000}, {"id": "b"})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, ignored)
    files.accept(record | {"id": "c"}, {"id": "c"})  # the next record follows the last whole one
    files.close()
    assert files.data_path.read_bytes() == before + (json.dumps(record | {"id": "c"}) + "\n").encode()


def test_the_judge_and_the_annotator_read_all_of_a_long_text(scripted, synth, tmp_path):
    """Both saw its first 6,000 characters: a text of --max-new-tokens 2000 was scored on its first third."""
    log = tmp_path / "requests.log"
    server = scripted("--long", "8", "--log", str(log))
    source = tmp_path / "web.jsonl"
    source.write_text(json.dumps({"text": "Ohm's law: voltage equals current times resistance in a circuit."}) + "\n")
    synth("synth", "rephrase", source, "--out", tmp_path / "out", "--base-url", server.url, *FAST, "--max-new-tokens", "3000", check=True)
    text = records(tmp_path / "out")[0]["text"]
    asked = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(text) > 7000 and len(asked) == 3  # the rephrasing, its annotation and its judging
    assert all(request["chars"] > len(text) for request in asked[1:])
