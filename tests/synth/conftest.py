import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sutra.synth.serve import free_port

SCRIPTED = Path(__file__).with_name("scripted_server.py")


class Scripted:
    """The scripted OpenAI-compatible server as a killable subprocess on a fixed loopback port."""

    def __init__(self, *options: str, port: int | None = None):
        self.port, self.options, self.process = port or free_port(), options, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "Scripted":
        self.process = subprocess.Popen([sys.executable, str(SCRIPTED), str(self.port), *self.options])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("scripted server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def scripted():
    servers = []

    def start(*options: str, port: int | None = None) -> Scripted:
        server = Scripted(*options, port=port).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def synth(capsys, monkeypatch):
    """Run `sutra ARGS...` in this process (no interpreter start-up per call): (exit code, stdout, stderr)."""
    from sutra.cli import main

    def run(*args: str, env: dict | None = None, check: bool = False):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check and code != 0:
            raise AssertionError(f"sutra {' '.join(map(str, args))} failed ({code}):\n{out}\n{err}")
        return code, out, err

    return run


@pytest.fixture(scope="session")
def teacher_server():
    """The real llama.cpp server with the SmolLM2-135M-Instruct GGUF teacher, on loopback, one thread."""
    from sutra.synth.serve import INSTALL_HINT, LlamaCppServer, llama_cpp_available

    if not llama_cpp_available():
        pytest.skip(f"llama.cpp's server (llama_cpp) cannot be imported; install it with {INSTALL_HINT}")
    server = LlamaCppServer(n_ctx=2048, threads=1)
    with server:
        yield server
