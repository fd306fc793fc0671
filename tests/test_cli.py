"""The `sutra` command as a user runs it: real subprocesses, real assets."""

import pytest

from sutra_testing import run_sutra


def command_paths(parser, prefix=()):
    """Every command and subcommand of the parser, as the words a user types, each with its help line."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*prefix, name), helps.get(name)
                yield from command_paths(sub, (*prefix, name))


def test_help_lists_commands_and_every_subcommand_has_help(capsys):
    from sutra.cli import build_parser

    result = run_sutra("--help", check=True)
    paths = list(command_paths(build_parser()))
    assert len(paths) >= 25 and ("train",) in {path for path, _ in paths} and ("synth", "graph", "stats") in {path for path, _ in paths}
    for path, help_line in paths:
        assert help_line, f"`sutra {' '.join(path)}` has no line in its parent's help"
        if len(path) == 1:
            assert f"    {path[0]}" in result.stdout, path
    for path, _ in paths:  # one process for all: each --help exits, so each is parsed on its own
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args([*path, "--help"])
        assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: sutra {' '.join(path)} "), path


def test_model_info_prints_the_card_parameter_counts():
    assert "69,230,976" in run_sutra("model", "info", "smollm2-70m", check=True).stdout
    assert "134,515,008" in run_sutra("model", "info", "smollm2-135m", check=True).stdout


def test_model_info_json_is_one_object_a_script_can_read():
    import json

    info = json.loads(run_sutra("model", "info", "smollm2-70m", "--json", check=True).stdout)
    assert info["num_parameters"] == 69_230_976 and info["num_layers"] == 32 and info["head_dim"] == 64
    assert info["source"] == "preset" and info["name"] == "smollm2-70m"


@pytest.mark.parametrize(
    "args, message",
    [
        (["model", "info", "gpt-17"], "unknown model 'gpt-17'"),
        (["model", "info", "smollm-70m"], "or a preset (smollm2-70m, smollm2-135m"),  # a typo of a preset: the presets are named too
        (["assets", "fetch", "no-such-asset"], "unknown asset 'no-such-asset'"),
        (["generate", "/nonexistent/ckpt", "--prompt", "x"], "unknown model '/nonexistent/ckpt' (no such directory): give a checkpoint directory"),
        (["generate", "README.md", "--prompt", "x"], "unknown model 'README.md' (a file)"),
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--device", "cuda"], "no CUDA GPU"),
        # counts are checked by argparse, before the prompt is echoed (a negative count printed it and exited 0)
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--max-new-tokens", "-1"], "argument --max-new-tokens: must be at least 1, got -1"),
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--top-k", "0"], "argument --top-k: must be at least 1, got 0"),
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--temperature", "nan"], "sampling needs temperature >= 0"),
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--dtype", "bf17"],
         "argument --dtype: must be float32 (fp32), bfloat16 (bf16) or float16 (fp16), got 'bf17'"),
        (["eval", "tiny", "--tasks", "piqa", "--batch-size", "many"], "argument --batch-size: must be a whole number, got 'many'"),
        (["data", "prepare", "x.jsonl", "--out", "unused", "--min-quality", "nan"], "argument --min-quality: must be a finite number, got 'nan'"),
        (["generate", "smollm2-135m-instruct", "--prompt", "x", "--temperature", "0.7", "--seed", str(10**23)],
         "argument --seed: must be between 0 and 2**63 - 1, got 100000000000000000000000"),
        # an empty value (an unset shell variable) was taken: --out '' is the current directory, --domains '' no filter
        (["data", "prepare", "x.jsonl", "--out", ""], "--out is given an empty value (an unset shell variable?)"),
        (["data", "prepare", "x.jsonl", "--out", "o", "--domains="], "--domains is given an empty value"),
        (["eval", "tiny", "--tasks", ""], "--tasks is given an empty value"),
        (["eval", "", "--tasks", "piqa"], "argument 2 is empty"),
        (["train", "recipes/tiny-cpu.yaml", "--set", "run_dir="], "--set run_dir=: an empty value (an unset shell variable?); give one, or run_dir=null for none"),
        (["data", "prepare", "x.jsonl", "--out", "o", "--domains", ","], "--domains ',' names nothing; give comma-separated names"),
        (["data", "mix", "d", "--out", "m.json", "--block-tokens", "0"], "--block-tokens '0': expected a positive token count"),
        # a flag given twice kept its last value silently (--tasks piqa alone was scored)
        (["eval", "tiny", "--tasks", "arc_easy", "--tasks", "piqa"], "sutra: error: --tasks is given twice; give it once; see `sutra eval --help`"),
        (["data", "mix", "d", "--out", "a.json", "--out=b.json"], "--out is given twice"),
        # an unknown flag is reported with its subcommand's help, not the top level's
        (["data", "prepare", "x.jsonl", "--out", "o", "--bogus"], "sutra: error: unrecognized arguments: --bogus; see `sutra data prepare --help`"),
        # argparse's own errors are one line too (its usage block came first)
        (["data", "prepare"], "sutra: error: the following arguments are required: SOURCE, --out; see `sutra data prepare --help`"),
        # undecodable bytes (surrogates here) were a TypeError from the tokenizer
        (["generate", "smollm2-135m-instruct", "--prompt", "caf\udce9"], "--prompt is not UTF-8 text (an undecodable byte at character 3)"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, message):
    result = run_sutra(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr  # one line: no usage block before it


@pytest.mark.parametrize("args, suffix, text", [
    (["train", "{file}"], ".yaml", "name: x\ntrain: " + "[" * 5000 + "]" * 5000 + "\n"),
    (["compare", "{file}"], ".yaml", "name: x\narms: " + "[" * 5000 + "]" * 5000 + "\n"),
    (["synth", "graph", "stats", "{file}"], ".json", '{"concepts": ' + "[" * 20000 + "]" * 20000 + "}"),
    (["report", "{file}", "--out", "{tmp}/report"], ".json", "[" * 20000 + "]" * 20000),
])
def test_files_nested_too_deeply_to_parse_are_one_line(tmp_path, args, suffix, text):
    """Python's parsers raise RecursionError past about a thousand levels: a traceback before."""
    path = tmp_path / f"deep{suffix}"
    path.write_text(text)
    result = run_sutra(*(a.format(file=path, tmp=tmp_path) for a in args))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"sutra: error: {path}") and "maximum recursion depth" in result.stderr


def test_only_an_empty_prompt_may_be_empty():
    from sutra.cli import empty_argument

    assert empty_argument(["generate", "tiny", "--prompt", ""]) is None and empty_argument(["generate", "tiny", "--prompt="]) is None
    assert empty_argument(["train", "r.yaml", "--set", "train.seed=1"]) is None
    assert empty_argument(["train", "r.yaml", "--set", ""]) == "--set is given an empty value"


def test_an_empty_prompt_starts_a_document(tmp_path):
    """`--prompt ''` was refused ("a prompt is empty") for a tokenizer that adds no BOS."""
    result = run_sutra("generate", "smollm2-135m-instruct", "--prompt", "", "--max-new-tokens", "4", check=True)
    assert result.stdout.strip()


def test_devices_sutra_has_no_kernels_for_are_refused_before_any_model_loads():
    from sutra.model.device import pick_device
    from sutra.errors import SutraError

    for name in ("mps", "xpu", "meta"):  # valid torch devices: each failed later with a raw RuntimeError
        with pytest.raises(SutraError, match=f"device '{name}' is not supported; use cpu, cuda or cuda:N"):
            pick_device(name)
    with pytest.raises(SutraError, match="unknown device 'gpu'"):
        pick_device("gpu")
    assert pick_device("cpu").type == "cpu"


def test_prompt_longer_than_the_context_is_refused():
    result = run_sutra("generate", "smollm2-135m-instruct", "--prompt", "word " * 9000, "--max-new-tokens", "1")
    assert result.returncode == 2 and "context is 8192" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # the prompt is echoed only once generation starts


def test_chat_with_a_model_without_a_chat_template_is_refused(tmp_path, tokenizer):
    from sutra.model.llama import Llama
    from sutra.model.config import get_preset
    from sutra.model.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "base", Llama(get_preset("tiny")), tokenizer)
    (checkpoint / "chat_template.jinja").unlink()  # as a base model's tokenizer has none
    result = run_sutra("generate", str(checkpoint), "--prompt", "hi", "--chat", "--max-new-tokens", "2")
    assert result.returncode == 2 and "has no chat template (a base model); drop --chat" in result.stderr and "Traceback" not in result.stderr
    assert run_sutra("generate", str(checkpoint), "--prompt", "hi", "--max-new-tokens", "2", check=True).stdout.startswith("hi")


def test_generate_completes_paris_and_export_import_round_trip(tmp_path):
    result = run_sutra("generate", "smollm2-135m-instruct", "--prompt", "The capital of France is", "--max-new-tokens", "8", check=True)
    assert result.stdout.startswith("The capital of France is") and "Paris" in result.stdout
    run_sutra("import", "smollm2-135m-instruct", str(tmp_path / "ckpt"), check=True)
    assert "134,515,008" in run_sutra("model", "info", str(tmp_path / "ckpt"), check=True).stdout
    again = run_sutra("generate", str(tmp_path / "ckpt"), "--prompt", "The capital of France is", "--max-new-tokens", "8", check=True)
    assert again.stdout == result.stdout
    listing = run_sutra("assets", "list", check=True).stdout
    assert "smollm2-135m-instruct" in listing and "fetched" in listing


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`sutra model info ... | head -1`: BrokenPipeError is an OSError, whose clause came first and
    re-raised it (not a full disk): a traceback, exit code 1."""
    import os
    import subprocess
    import sys

    from sutra_testing import REPO

    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written
    result = subprocess.run([sys.executable, "-m", "sutra", "model", "info", "smollm2-70m"], stdout=write, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, timeout=120)
    os.close(write)
    assert result.returncode == 0 and result.stderr == "", result.stderr
