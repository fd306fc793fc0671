"""End-to-end `sutra synth` runs against the scripted OpenAI-compatible server (a real HTTP
server on loopback, see scripted_server.py): output schema, resume after a kill, a server that
dies mid-run, retries, several base URLs, keys, shards, rephrasing and bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sutra.synth.serve import free_port
from sutra_testing import REPO, run_sutra
from synth_helpers import check_schema, journal, records, wait_for

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

    prepared = run_sutra("data", "prepare", str(out), "--out", str(tmp_path / "prepared"), "--val-fraction", "0", "--workers", "1", check=True).stdout
    assert (tmp_path / "prepared" / "manifest.json").is_file()
    assert "input records                6" in prepared and "dropped                      0" in prepared


def _start_run(out, url, n, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "sutra", "synth", "run", "--n", str(n), "--out", str(out), "--base-url", url, *FAST, *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.slow
def test_a_killed_run_resumes_without_losing_or_repeating_items(scripted, synth, tmp_path, tokenizer):
    server = scripted("--delay", "0.4")
    out = tmp_path / "synth"
    run = _start_run(out, server.url, 8, "--concurrency", "1")
    wait_for(lambda: len(records(out)) >= 3)
    run.send_signal(signal.SIGKILL)
    run.wait()
    before = (out / "train_000.jsonl").read_bytes()
    kept = before[: before.rfind(b"\n") + 1]
    with open(out / "train_000.jsonl", "ab") as f:  # what a kill in the middle of a write leaves behind
        f.write(b'{"id": "half-written')
    _, _, stderr = synth("synth", "run", "--n", "8", "--out", out, "--base-url", server.url, *FAST, "--concurrency", "1", check=True)
    assert "resuming train_000.jsonl" in stderr and "partial line(s) from a killed run cut off" in stderr
    rows = records(out)
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
    run = _start_run(out, server.url, 6, "--concurrency", "1", "--retries", str(retries))
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
    assert len(records(out)) == 4
    requests = [[json.loads(line) for line in log.read_text().splitlines()] for log in logs]
    assert all(len(r) >= 2 for r in requests)  # both servers took work
    assert all(r["auth"] == f"Bearer {secret}" for rs in requests for r in rs)
    assert secret not in stdout + stderr
    assert not any(secret in p.read_text(errors="replace") for p in out.rglob("*") if p.is_file())


def test_malformed_judge_answers_are_counted_rejects(scripted, synth, tmp_path):
    server = scripted("--judge", "bad")
    out = tmp_path / "synth"
    code, _, stderr = synth("synth", "run", "--n", "2", "--out", out, "--base-url", server.url, *FAST, "--max-attempts", "3", "--judge-retries", "1")
    assert code == 1 and "stopped before the target (max attempts)" in stderr
    assert records(out) == []
    stats = json.loads((out / ".synth" / "stats.json").read_text())
    assert stats["rejected"] == {"judge_invalid_json": 3}
    assert all(e["judge_error"] for e in journal(out))
    # a token target stops too: 5x the items it needs at the default length (1000 / 384 -> 3), plus 2 x concurrency
    code, _, stderr = synth("synth", "run", "--tokens", "1000", "--out", tmp_path / "by-tokens", "--base-url", server.url, *FAST, "--judge-retries", "0")
    assert code == 1 and "stopped before the target (max attempts)" in stderr
    assert json.loads((tmp_path / "by-tokens" / ".synth" / "stats.json").read_text())["rejected"] == {"judge_invalid_json": 19}


def test_a_separate_judge_server_never_gets_the_generator_key(scripted, synth, tmp_path):
    logs = [tmp_path / "generator.log", tmp_path / "judge.log"]
    generator, judge = scripted("--log", str(logs[0])), scripted("--log", str(logs[1]))
    secret = "sk-generator-only-4242"
    synth("synth", "run", "--n", "2", "--out", tmp_path / "synth", "--base-url", generator.url, "--judge-base-url", judge.url, *FAST,
          env={"SUTRA_SYNTH_API_KEY": secret}, check=True)
    sent = [[json.loads(line)["auth"] for line in log.read_text().splitlines()] for log in logs]
    assert sent[0] and all(auth == f"Bearer {secret}" for auth in sent[0])
    assert sent[1] and not any(secret in (auth or "") for auth in sent[1])


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
    code, _, stderr = synth("synth", "run", "--n", "5", "--shard", "0/2", "--seed", "7", "--out", out, "--base-url", server.url)
    assert code == 2 and "different settings (seed: 0 then, 7 now)" in stderr


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


def test_graph_expand_adds_only_validated_concepts(scripted, synth, tmp_path):
    server = scripted()
    _, stdout, _ = synth("synth", "graph", "expand", "--concepts", "fractions", "--out", tmp_path / "g.yaml", "--base-url", server.url, check=True)
    assert "1 concept(s) added" in stdout and "added 1, duplicate 1" in stdout
    assert synth("synth", "graph", "stats", tmp_path / "g.yaml", check=True)[1].startswith(f"graph {tmp_path / 'g.yaml'}: 50 concepts")
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
