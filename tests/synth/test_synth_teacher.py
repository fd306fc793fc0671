"""Synthesis against the real local teacher: llama.cpp's OpenAI-compatible server serving the
SmolLM2-135M-Instruct GGUF on loopback. Generation is kept short (a 135M model on a shared
2-core CPU makes about 20 tokens/s)."""

import signal
import subprocess
import sys
import time

import pytest

from sutra.synth.serve import LlamaCppServer, free_port
from sutra_testing import REPO
from synth_helpers import check_schema, journal, records, wait_for

SHORT = ["--max-new-tokens", "64", "--words", "40", "--min-tokens", "15", "--min-quality", "0", "--concurrency", "1"]


@pytest.mark.slow
def test_end_to_end_with_the_teacher_server(teacher_server, synth, tmp_path, tokenizer):
    out = tmp_path / "synth"
    _, stdout, _ = synth("synth", "run", "--graph", "default", "--n", "2", "--out", out, "--base-url", teacher_server.base_url, *SHORT, check=True)
    rows = records(out)
    assert len(rows) == 2 and "accepted 2 item(s)" in stdout
    for row in rows:
        check_schema(row, tokenizer)
    # The grammar-constrained JSON mode makes the 135M judge answer in one go.
    assert all(e.get("judge_attempts") == 1 for e in journal(out) if e["status"] == "accepted")


@pytest.mark.slow
def test_server_killed_mid_run_then_run_killed_and_resumed(synth, tmp_path):
    """The must-show fault test: the teacher server dies mid-run and comes back (the run rides it
    out with retries), then the run itself is killed and resumed: no item lost, none duplicated."""
    from sutra.synth.serve import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama.cpp's server (llama_cpp) cannot be imported")
    port = free_port()
    server = LlamaCppServer(port=port, n_ctx=2048, threads=1).start()
    out = tmp_path / "synth"
    url = server.base_url
    run = subprocess.Popen([sys.executable, "-m", "sutra", "synth", "run", "--n", "4", "--out", str(out), "--base-url", url, *SHORT, "--retries", "10"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: len(records(out)) >= 1, 240)
        server.kill()
        time.sleep(2)
        server = LlamaCppServer(port=port, n_ctx=2048, threads=1).start()
        wait_for(lambda: len(records(out)) >= 2, 240)
        run.send_signal(signal.SIGKILL)
        run.wait()
        assert run.returncode == -signal.SIGKILL
        kept = (out / "train_000.jsonl").read_bytes()
        kept = kept[: kept.rfind(b"\n") + 1]
        _, _, stderr = synth("synth", "run", "--n", "4", "--out", out, "--base-url", url, *SHORT, check=True)
        assert "resuming train_000.jsonl" in stderr
    finally:
        run.kill()
        server.stop()
    rows = records(out)
    assert len(rows) == 4 and len({r["id"] for r in rows}) == 4
    assert (out / "train_000.jsonl").read_bytes().startswith(kept)
    indices = [e["index"] for e in journal(out)]
    assert len(indices) == len(set(indices))


@pytest.mark.slow
def test_serve_teacher_command_serves_on_loopback():
    import urllib.request

    from sutra.synth.serve import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama.cpp's server (llama_cpp) cannot be imported")
    port = free_port()
    command = subprocess.Popen([sys.executable, "-m", "sutra", "synth", "serve-teacher", "--port", str(port), "--threads", "1"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert f"at http://127.0.0.1:{port}/v1" in command.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as response:
            assert response.status == 200
    finally:
        # SIGTERM, not Ctrl-C: a shell's background job inherits SIGINT ignored
        command.terminate()
        assert command.wait(timeout=60) == 128 + signal.SIGTERM
    with pytest.raises(OSError):  # the llama.cpp child went with it
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=5)


@pytest.mark.slow
def test_sigterm_to_a_run_stops_the_teacher_server_it_started(tmp_path):
    """A run's built-in llama.cpp server must end with it (kill, docker stop, or `sutra demo`
    stopping its stage), not keep its port and cores."""
    from sutra.synth.serve import llama_cpp_available

    if not llama_cpp_available():
        pytest.skip("llama.cpp's server (llama_cpp) cannot be imported")
    run = subprocess.Popen([sys.executable, "-m", "sutra", "synth", "run", "--n", "50", "--out", str(tmp_path / "synth"), "--backend", "llama-cpp",
                            *SHORT], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def server() -> int | None:
        children = f"/proc/{run.pid}/task/{run.pid}/children"
        try:
            return next((int(pid) for pid in open(children).read().split() if b"llama_cpp.server" in open(f"/proc/{pid}/cmdline", "rb").read()), None)
        except FileNotFoundError:  # it, or a child, ended meanwhile
            return None

    def gone(pid: int) -> bool:
        try:
            return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has ended
        except FileNotFoundError:
            return True

    try:
        wait_for(lambda: server() is not None, 120)
        child = server()
        time.sleep(2)
        run.terminate()
        assert run.wait(timeout=60) == 128 + signal.SIGTERM, run.stderr.read()[-3000:]
        wait_for(lambda: gone(child), 30)
    finally:
        if run.poll() is None:
            run.kill()
