"""Chat backends the synthesis stages talk to.

OpenAIBackend: any OpenAI-compatible /v1/chat/completions server (vLLM, llama.cpp's server,
Ollama, OpenAI), async over aiohttp with bounded concurrency, a per-request timeout, retries with
exponential backoff on 429/5xx/timeouts/connection errors, and load spread over several base URLs.
TransformersBackend: a local model spec run in-process with sutra.model (slow on CPU; the fallback
when no server is available).
"""

import asyncio
import os
import random
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from sutra.errors import SutraError

# Structured-output dialects for asking a server for JSON, tried in order when json_mode="auto":
# OpenAI/vLLM/Ollama understand json_schema; llama.cpp's Python server wants json_object + schema.
JSON_MODES = ("json_schema", "json_object", "none")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# A password in a URL's userinfo (user:PASSWORD@host; up to the last @, as URL parsers read it), scheme or not.
_URL_PASSWORD = re.compile(r"((?:^|[\s'\"(=]|//)[^\s'\"/?#@:]*):[^\s'\"/?#]+@")
# The value of a query parameter whose name looks like a credential (?api_key=..., &access_token=..., &sig=...),
# short of punctuation that ends it in a message ("URL: error").
_SECRET_PARAM = re.compile(r"([?&;][^\s'\"=&#]*(?:key|token|secret|passw|pwd|auth|sig|credential)[^\s'\"=&#]*=)"
                           r"[^\s'\"&#]*?(?=[:,;.)]*(?:[\s'\"&#]|$))", re.IGNORECASE)
# A user name alone before the host (http://TOKEN@host): services put tokens there too.
_URL_USER_ONLY = re.compile(r"//[^\s'\"/?#@:]+@")


def redact(text: str) -> str:
    """`text` (a URL, or a message naming URLs) with URL passwords, a lone user name (often a token)
    and secret-looking query values as ***."""
    text = _URL_USER_ONLY.sub("//***@", _URL_PASSWORD.sub(r"\1:***@", text))
    return _SECRET_PARAM.sub(r"\1***", text)


class BackendError(SutraError):
    """The backend could not answer (after retries) or refuses to serve us at all: stop the run."""

    def __init__(self, message: str):
        # these messages name server URLs (and echo server answers): printed, and journalled for rejects
        super().__init__(redact(message))


class RequestRejected(BackendError):
    """The server refused this one request (e.g. longer than its context): reject the item, go on."""


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop", "length", ...


def normalize_base_url(url: str) -> str:
    parsed = urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SutraError(f"base URL {redact(url.strip())!r} is not an http(s) URL; use e.g. http://127.0.0.1:8765/v1")
    return urlunsplit(parsed._replace(path=parsed.path.rstrip("/") or "/v1"))


def _endpoint(base_url: str, path: str) -> str:
    """`path` under `base_url`, before its query string (so a key given as ?api_key=... stays a parameter)."""
    parsed = urlsplit(base_url)
    return urlunsplit(parsed._replace(path=parsed.path + path))


def env_or(value: str | None, *names: str) -> str | None:
    if value:
        return value
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return None


class OpenAIBackend:
    def __init__(self, base_urls: list[str], model: str | None = None, api_key: str | None = None, concurrency: int = 4,
                 timeout: float = 300.0, retries: int = 6, backoff: float = 1.0, max_backoff: float = 30.0, json_mode: str = "auto"):
        if not base_urls:
            raise SutraError("no base URL given; pass --base-url or set SUTRA_SYNTH_BASE_URL")
        if json_mode != "auto" and json_mode not in JSON_MODES:
            raise SutraError(f"unknown json mode {json_mode!r}; use auto, {', '.join(JSON_MODES)}")
        self.base_urls = [normalize_base_url(u) for u in base_urls]
        if api_key and any(urlsplit(u).password is not None for u in self.base_urls):
            # aiohttp refuses to send both, which would read as an unreachable server
            raise SutraError(f"base URL {redact(self.base_urls[0])} carries a password and an API key is set too "
                             "(--api-key or the environment); give the credentials one way only")
        if api_key and any(ord(c) < 0x20 or ord(c) == 0x7F for c in api_key):
            # (an HTTP header cannot carry it: aiohttp's ValueError read as an unreachable server)
            raise SutraError("the API key (--api-key or the environment) holds a control character, such as a newline or carriage "
                             "return a file or copy left at its end; remove it")
        self.model = model
        self._api_key = api_key  # sent in the Authorization header only; never printed
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self._json_modes = list(JSON_MODES) if json_mode == "auto" else [json_mode]
        self._in_flight = {u: 0 for u in self.base_urls}
        self._next = 0
        self._semaphore = None
        self._session = None
        self.stats = {"requests": 0, "retries": 0}

    @property
    def name(self) -> str:
        return redact(f"{self.model or '?'} @ {', '.join(self.base_urls)}")

    def _headers(self) -> dict:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def _ensure_session(self):
        import aiohttp

        if self._session is None:
            self._semaphore = asyncio.Semaphore(self.concurrency * len(self.base_urls))
            self._session = aiohttp.ClientSession(headers=self._headers(), timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    def _pick_url(self, avoid: str | None) -> str:
        """The least busy base URL, round-robin among equals, avoiding the one that just failed."""
        candidates = [u for u in self.base_urls if u != avoid] or self.base_urls
        least = min(self._in_flight[u] for u in candidates)
        ordered = self.base_urls[self._next:] + self.base_urls[:self._next]
        url = next(u for u in ordered if u in candidates and self._in_flight[u] == least)
        self._next = (self.base_urls.index(url) + 1) % len(self.base_urls)
        return url

    async def check(self, attempts: int = 3) -> None:
        """Fail fast with a clear message when a server is not there; pick a model if none was named."""
        import aiohttp

        session = await self._ensure_session()
        for url in self.base_urls:
            last = None
            for attempt in range(attempts):
                try:
                    async with session.get(_endpoint(url, "/models"), timeout=aiohttp.ClientTimeout(total=10)) as response:
                        if response.status in (401, 403):
                            raise BackendError(f"{url}: HTTP {response.status}, the API key was refused; set --api-key or SUTRA_SYNTH_API_KEY")
                        if response.status == 200:
                            listed = await response.json(content_type=None)
                            # an odd listing names no model (one may still come from --model)
                            models = listed.get("data") if isinstance(listed, dict) else None
                            first = models[0] if isinstance(models, list) and models else None
                            if self.model is None and isinstance(first, dict) and isinstance(first.get("id"), str):
                                self.model = first["id"]
                            break
                        last = f"HTTP {response.status}"
                        if response.status == 404:  # some servers do not list models; chat may still work
                            break
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
                    last = f"{type(exc).__name__}: {exc}"
                if attempt + 1 < attempts:
                    await asyncio.sleep(1.0)
            else:
                raise BackendError(f"{url}: server unreachable ({last}); start it (e.g. 'sutra synth serve-teacher') or fix --base-url")
        if self.model is None:
            raise BackendError(f"{self.base_urls[0]}: the server lists no models; pass --model")

    async def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.7, seed: int | None = None,
                       json_schema: dict | None = None) -> Completion:
        import aiohttp

        session = await self._ensure_session()
        payload = {"model": self.model or "default", "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            payload["seed"] = seed
        url, last_error = None, "no attempt"
        async with self._semaphore:
            # the dialects as they stand when this request may go (not while it waited for a slot)
            modes, dialect = (list(self._json_modes) if json_schema else ["none"]), 0
            attempt = 0
            while attempt <= self.retries:
                body = {**payload, **_response_format(modes[dialect], json_schema)}
                url = self._pick_url(avoid=url if attempt else None)
                self._in_flight[url] += 1
                retry_after = None
                try:
                    self.stats["requests"] += 1
                    async with session.post(_endpoint(url, "/chat/completions"), json=body) as response:
                        text = await response.text()
                        if response.status == 200:
                            completion = _parse_completion(url, text)
                            for refused in modes[:dialect]:  # the server speaks a later dialect: use it from now on
                                if refused in self._json_modes and len(self._json_modes) > 1:
                                    self._json_modes.remove(refused)
                            return completion
                        refused_dialect = response.status in (400, 422) or "response_format" in text  # llama-cpp-python says 500
                        if refused_dialect and dialect + 1 < len(modes):
                            # Perhaps another JSON dialect, perhaps something else (a prompt too long): try the
                            # next dialect for this request, without backoff; only its success drops this one.
                            dialect += 1
                            continue
                        if response.status in (400, 413, 422):
                            raise RequestRejected(f"{url}: HTTP {response.status}: {_short(text)}")
                        if response.status not in RETRYABLE_STATUS:
                            raise BackendError(f"{url}: HTTP {response.status}: {_short(text)}" + _status_hint(response.status))
                        last_error = f"HTTP {response.status}: {_short(text)}"
                        retry_after = _retry_after(response.headers.get("Retry-After"))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    if isinstance(exc, asyncio.TimeoutError):
                        last_error += f", no answer within --timeout {self.timeout:g} s"
                except _MalformedResponse as exc:
                    last_error = str(exc)
                finally:
                    self._in_flight[url] -= 1
                attempt += 1
                if attempt <= self.retries:
                    self.stats["retries"] += 1
                    delay = retry_after if retry_after is not None else min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
                    await asyncio.sleep(delay * (0.75 + 0.5 * random.random()))
        raise BackendError(
            f"no answer from {', '.join(self.base_urls)} after {self.retries + 1} attempts (last error: {last_error}); "
            "check that the server is running and reachable" + (", or raise --timeout for a slow one" if "--timeout" in last_error else "")
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _MalformedResponse(Exception):
    pass


def _response_format(mode: str, schema: dict | None) -> dict:
    if schema is None or mode == "none":
        return {}
    if mode == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}}
    return {"response_format": {"type": "json_object", "schema": schema}}


def _parse_completion(url: str, body: str) -> Completion:
    """The completion in a 200 answer; anything else is a _MalformedResponse (retried, then the run stops)."""
    import json

    def malformed(problem: str) -> _MalformedResponse:
        return _MalformedResponse(f"{url}: not an OpenAI chat completion ({problem}): {_short(body)}")  # redacted by the BackendError it ends in

    try:
        data = json.loads(body)
    except ValueError:
        raise malformed("not JSON") from None
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices:
        raise malformed("no choices")
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        raise malformed("choices[0] has no message")
    text, finish = message.get("content"), choices[0].get("finish_reason")
    if not isinstance(text, str | None):  # null is an empty answer (e.g. all of it went to reasoning): rejected as such later
        raise malformed(f"message.content is {type(text).__name__}, not a string")
    if not isinstance(finish, str | None):
        raise malformed(f"finish_reason is {type(finish).__name__}, not a string")
    if text:  # a lone UTF-16 surrogate ("\ud83d" in the JSON) is no character: the tokenizer and every writer refuse it
        text = LONE_SURROGATE.sub("\ufffd", text)
    usage = data.get("usage") or {}  # some servers leave usage out: it only feeds the tokens/s figure
    counts = [usage.get(k) or 0 for k in ("prompt_tokens", "completion_tokens")] if isinstance(usage, dict) else None
    if counts is None or not all(type(n) is int and n >= 0 for n in counts):
        raise malformed("usage token counts are not whole numbers")
    return Completion(text or "", counts[0], counts[1], finish or "stop")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def _status_hint(status: int) -> str:
    return {
        401: "; the API key was refused: set --api-key or SUTRA_SYNTH_API_KEY",
        403: "; the API key is not allowed to use this model",
        404: "; check the base URL (it usually ends in /v1) and --model",
    }.get(status, "")


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None


class TransformersBackend:
    """Runs a model spec (Sutra checkpoint, HF dir, smollm2-135m-instruct) in this process, one request at a time."""

    def __init__(self, spec: str = "smollm2-135m-instruct", device: str | None = None):
        self.spec, self.device = spec, device
        self.model = spec
        self._loaded = None
        self._lock = asyncio.Lock()
        self.stats = {"requests": 0, "retries": 0}

    @property
    def name(self) -> str:
        return f"{self.spec} (in-process)"

    def _load(self):
        if self._loaded is None:
            from sutra.model.checkpoint import load_model
            from sutra.model.device import default_dtype, pick_device

            device = pick_device(self.device)
            loaded = load_model(self.spec, device=device, dtype=default_dtype(device))
            self._loaded = (loaded, loaded.tokenizer.hf())
        return self._loaded

    async def check(self) -> None:
        await asyncio.to_thread(self._load)

    def _complete_sync(self, messages, max_tokens, temperature, seed) -> Completion:
        from sutra.model.generate import generate

        loaded, hf_tokenizer = self._load()
        if hf_tokenizer.chat_template:
            prompt = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        else:  # a base model: plain text with the roles spelled out
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\n"
        prompt_ids = loaded.tokenizer.encode(prompt)
        room = loaded.model.config.max_seq_len - len(prompt_ids)
        if room < 1:
            raise RequestRejected(f"the prompt has {len(prompt_ids)} tokens, more than {self.spec}'s context")
        ids = generate(loaded.model, prompt_ids, min(max_tokens, room), temperature, top_k=50, top_p=0.95, seed=seed,
                       stop_ids=loaded.eos_token_ids)
        stopped = bool(ids) and ids[-1] in loaded.eos_token_ids
        text = loaded.tokenizer.decode(ids[:-1] if stopped else ids, skip_special_tokens=True)
        return Completion(text, len(prompt_ids), len(ids), "stop" if stopped else "length")

    async def complete(self, messages: list[dict], max_tokens: int, temperature: float = 0.7, seed: int | None = None,
                       json_schema: dict | None = None) -> Completion:
        # No grammar-constrained decoding in-process: JSON answers go through the judge's repair/retry.
        async with self._lock:
            self.stats["requests"] += 1
            return await asyncio.to_thread(self._complete_sync, messages, max_tokens, temperature, seed)

    async def close(self) -> None:
        pass
