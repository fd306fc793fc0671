"""The hub probe: asked once and quickly, so an offline machine gets its error at once rather than
after the hub libraries' retries, and hub ids still resolve from local caches."""

import http.server
import socket
import threading
import time

import pytest

from sutra.hub import hub_unreachable
from sutra_testing import run_sutra


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub_unreachable.cache_clear()
    yield
    hub_unreachable.cache_clear()


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_any_http_answer_means_reachable_and_a_closed_port_does_not(monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_unreachable() is None  # a 404 is still an answer
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub_unreachable.cache_clear()
    assert f"http://127.0.0.1:{port} does not answer" in hub_unreachable()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_unreachable.cache_clear()
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"


@pytest.mark.parametrize("command", [
    ("generate", "someone/no-such-model", "--prompt", "hi"),
    ("data", "prepare", "{tmp}/docs.jsonl", "--out", "{tmp}/out", "--tokenizer", "someone/no-such-tokenizer"),
])
def test_hub_ids_offline_fail_at_once_with_one_line(command, tmp_path):
    (tmp_path / "docs.jsonl").write_text('{"text": "a document"}\n')
    started = time.monotonic()
    result = run_sutra(*(part.format(tmp=tmp_path) for part in command), env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("sutra: error:")]
    assert len(errors) == 1 and "HF_HUB_OFFLINE is set, and it is not in the Hugging Face cache" in errors[0]
    assert time.monotonic() - started < 20  # the hub libraries' own retries took 25-50 s
