"""Serving the offline teacher (SmolLM2-135M-Instruct GGUF) with llama.cpp's OpenAI-compatible server.

The server comes from `pip install 'llama-cpp-python[server]'` (the `synth` extra); it only ever
listens on loopback here.
"""

import collections
import importlib.util
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from sutra.errors import SutraError

INSTALL_HINT = "pip install 'llama-cpp-python[server]' (or: pip install -e '.[synth]')"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaCppServer:
    """A llama.cpp server subprocess; use as a context manager or call start()/stop()."""

    def __init__(self, model_path: str | Path | None = None, port: int | None = None, host: str = "127.0.0.1",
                 n_ctx: int = 2048, threads: int | None = None, log_path: str | Path | None = None):
        self.model_path = Path(model_path) if model_path else None
        self.host, self.port, self.n_ctx = host, port or free_port(), n_ctx
        # Half the cores: llama.cpp threads spin-wait, and oversubscribing a shared CPU slows it ~10x.
        self.threads = threads or max(1, min(8, (os.cpu_count() or 2) // 2))
        self.log_path = Path(log_path) if log_path else None
        self.process: subprocess.Popen | None = None
        self._log = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--n_threads_batch", str(self.threads),
        ]

    def start(self, timeout: float = 120.0) -> "LlamaCppServer":
        if not llama_cpp_available():
            raise SutraError(f"llama.cpp's server is not installed; run {INSTALL_HINT}")
        if self.model_path is None:
            from sutra.tokenizer import smollm2_gguf

            self.model_path = smollm2_gguf()
        if not self.model_path.is_file():
            raise SutraError(f"{self.model_path}: no such GGUF model file")
        try:
            with open(self.model_path, "rb") as f:
                magic = f.read(4)
        except OSError as exc:
            raise SutraError(f"{self.model_path}: cannot read it ({exc.strerror or exc})") from None
        if magic != b"GGUF":
            raise SutraError(f"{self.model_path}: not a GGUF model file (it does not begin with the bytes 'GGUF'); give a .gguf file")
        # the server's output goes to the log file, or through a pipe read continuously (a full one
        # would block the server) of which the last lines are kept: they say why a start failed
        self._log = open(self.log_path, "ab") if self.log_path else None
        self._log_start = self._log.tell() if self._log else 0
        self.process = subprocess.Popen(self.command(), stdout=self._log or subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._recent: collections.deque[str] = collections.deque(maxlen=4)
        self._reader = None if self._log else threading.Thread(target=self._keep_recent, args=(self.process.stdout,), daemon=True)
        if self._reader:
            self._reader.start()
        try:  # anything that ends the wait (Ctrl-C, SIGTERM) stops the child: no orphaned server
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SutraError(f"llama.cpp server exited with code {self.process.returncode} while starting{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise SutraError(f"llama.cpp server did not answer on {self.base_url} within {timeout:.0f} s{self._log_tail()}")

    def _keep_recent(self, stream) -> None:
        for line in stream:
            if line.strip():
                self._recent.append(line.decode(errors="replace").strip())

    def _log_tail(self) -> str:
        """The last lines the server wrote in this start (pread: the child's file offset is left alone)."""
        if self._log is None:
            if self._reader is not None:
                self._reader.join(timeout=2)  # (an exited server's last lines may still be in the pipe)
            lines = list(self._recent)
        else:
            fd = self._log.fileno()
            end = os.fstat(fd).st_size
            start = max(self._log_start, end - 4096)
            lines = [line.strip() for line in os.pread(fd, end - start, start).decode(errors="replace").splitlines() if line.strip()][-4:]
        return ": " + " | ".join(lines) if lines else ""

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self) -> "LlamaCppServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
