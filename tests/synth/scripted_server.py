"""A small, real OpenAI-compatible HTTP server for fast synth tests (the llama.cpp teacher is
tested separately): it answers /v1/models and /v1/chat/completions on 127.0.0.1 with
deterministic, varied educational-looking text, six-score judge JSON (whole numbers from 0 to 10,
with the small-model mistakes the judge must repair), annotation JSON and graph-expansion JSON.

    python scripted_server.py PORT [--fail-first N] [--judge good|bad|cut] [--delay S] [--log FILE] [--only-json-object] [--odd] [--same-text]

--fail-first N answers the first N chat requests with HTTP 503 (or 429 every other one);
--log appends one JSON line per chat request as it arrives (its time, path and query, Authorization
header, model, response_format, max_tokens and the length of its last message in characters);
--long N makes each generated text N+1 times as long;
--only-json-object answers 422 to any other response_format dialect, as llama-cpp-python does;
--too-long TEXT answers 400 "maximum context length" to a prompt that contains TEXT;
--odd answers a prompt that is a key of ODD_ANSWERS with that odd (mostly malformed) completion body.
"""

import argparse
import asyncio
import hashlib
import json
import random
import time

from aiohttp import web

SENTENCES = [
    "A {c} problem starts by naming what is known and what is asked.",
    "Students often meet {c} when they compare two quantities that change together.",
    "The key idea of {c} is that a whole can be understood through its parts.",
    "To check an answer about {c}, substitute it back and see whether the statement still holds.",
    "Historians of science note that {c} was refined over many generations of careful work.",
    "When you explain {c} to a friend, begin with an example from everyday life.",
    "A common mistake with {c} is to apply a rule outside the cases where it was derived.",
    "Teachers use diagrams for {c} because a picture shows the relationships at a glance.",
    "In practice, {c} appears in engineering, in medicine and in the kitchen.",
    "Each step of the reasoning about {c} should follow from the one before it.",
    "You can test your understanding of {c} by inventing a new example and solving it.",
    "The vocabulary of {c} is small, but each word has a precise meaning.",
]
# Bodies with HTTP 200 that are not quite OpenAI chat completions; the last two are odd but valid.
ODD_ANSWERS = {
    "not-an-object": [1, 2],
    "no-choices": {"choices": []},
    "no-message": {"choices": [{"text": "a legacy completion"}]},
    "content-not-text": {"choices": [{"message": {"content": 5}}]},
    "finish-not-text": {"choices": [{"message": {"content": "x"}, "finish_reason": 3}]},
    "usage-not-numbers": {"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "many", "completion_tokens": 2}},
    "usage-not-object": {"choices": [{"message": {"content": "x"}}], "usage": [3, 4]},
    "null-usage": {"choices": [{"message": {"content": "x"}, "finish_reason": "length"}], "usage": None},
    "null-content": {"choices": [{"message": {"content": None}}], "usage": {"prompt_tokens": 3, "completion_tokens": None}},
    "lone-surrogate": {"choices": [{"message": {"content": "half an emoji \ud83d here"}}]},  # sent as the JSON escape \ud83d
}
WORDS = "river lantern orbit meadow copper violin glacier harbor maple signal prism canyon ember falcon quartz willow".split()


def _text(prompt: str, seed: int) -> str:
    rng = random.Random(seed)
    concept = prompt.split('"')[1] if prompt.count('"') >= 2 else "the topic"
    paragraphs = []
    for _ in range(4):
        picked = rng.sample(SENTENCES, 4)
        extra = f"Consider the example of the {rng.choice(WORDS)} and the {rng.choice(WORDS)}, numbered {rng.randint(2, 999)}."
        paragraphs.append(" ".join(s.format(c=concept) for s in picked) + " " + extra)
    return "Sure! Here is the text you asked for:\n\n" + "\n\n".join(paragraphs)


def make_app(args) -> web.Application:
    state = {"chat": 0}

    async def models(request):
        if args.models_body is not None:
            return web.Response(text=args.models_body, content_type="application/json")
        return web.json_response({"object": "list", "data": [{"id": "scripted-teacher", "object": "model"}]})

    async def chat(request):
        body = await request.json()
        state["chat"] += 1
        if args.log:
            with open(args.log, "a") as f:
                f.write(json.dumps({"t": time.time(), "path": request.path_qs, "auth": request.headers.get("Authorization"),
                                    "model": body.get("model"), "response_format": body.get("response_format"),
                                    "max_tokens": body.get("max_tokens"), "chars": len(body["messages"][-1]["content"])}) + "\n")
        if args.odd and body["messages"][-1]["content"] in ODD_ANSWERS:
            return web.json_response(ODD_ANSWERS[body["messages"][-1]["content"]])
        dialect = (body.get("response_format") or {}).get("type", "json_object")
        if args.only_json_object and dialect != "json_object":  # like llama-cpp-python's server
            return web.json_response({"detail": f"response_format type {dialect} not supported"}, status=422)
        if args.too_long and args.too_long in body["messages"][-1]["content"]:
            return web.json_response({"error": {"message": "This model's maximum context length is 2048 tokens"}}, status=400)
        if state["chat"] <= args.fail_first:
            status = 429 if state["chat"] % 2 == 0 else 503
            return web.Response(status=status, text="busy", headers={"Retry-After": "0"} if status == 429 else {})
        if args.delay:
            await asyncio.sleep(args.delay)
        prompt = body["messages"][-1]["content"]
        seed = body.get("seed") or int(hashlib.sha1(prompt.encode()).hexdigest()[:8], 16)
        rng = random.Random(seed)
        finish = "stop"
        if "Rate this" in prompt:
            if args.judge == "cut":  # a thinking model's answer cut at the request's max_tokens
                content, finish = "<think>Clarity first: the text names what is known, then", "length"
            elif args.judge == "bad":
                content = "This text is quite good, I would say about seven out of ten."
            else:
                content = "```json\n{" + ", ".join(f"'{d}': {rng.randint(6, 9)}" for d in
                                                    ("Clarity", "accuracy", "pedagogy", "engagement", "depth", "creativity")) + ",}\n```"
        elif "Label this text" in prompt:
            content = json.dumps({"concept_name": "Fractions", "domain": "mathematics", "complexity_level": 3,
                                  "prerequisites": ["counting"], "builds_to": ["ratios"], "cross_domain_connections": []})
        elif "Propose" in prompt:
            content = json.dumps({"concepts": [{"name": "Equivalent Fractions", "complexity": 3, "related": ["Rhythm and Meter in Music"]},
                                               {"name": "Fractions", "complexity": 3}]})
        else:
            content = _text("one text", 0) if args.same_text else _text(prompt, seed)
            for _ in range(args.long):  # a longer text, of more paragraphs (each its own words: no repetition loop)
                content += "\n\n" + " ".join("The " + " ".join(rng.choices(WORDS + ["the", "and", "of", "is"], k=10)) + "." for _ in range(12))
        return web.json_response({
            "id": f"chatcmpl-{seed}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split()), "total_tokens": 0},
        })

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--judge", default="good", choices=["good", "bad", "cut"])
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--log", default=None)
    parser.add_argument("--only-json-object", action="store_true")
    parser.add_argument("--too-long", default=None, help="answer 400 (context length exceeded) to prompts containing this text")
    parser.add_argument("--models-body", default=None, help="answer /v1/models with this body instead of the listing")
    parser.add_argument("--odd", action="store_true", help="answer a prompt named in ODD_ANSWERS with that body")
    parser.add_argument("--same-text", action="store_true", help="answer every generation prompt with one text")
    parser.add_argument("--long", type=int, default=0, help="add the paragraphs of this many more texts to each generated one")
    args = parser.parse_args()
    web.run_app(make_app(args), host="127.0.0.1", port=args.port, print=None)
