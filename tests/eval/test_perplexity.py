"""`sutra eval --perplexity`: token-level perplexity over every validation window of a prepared dataset."""

import json
import re
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sutra_testing import run_sutra
from eval_helpers import benchmarks, tiny_model  # noqa: F401 (fixtures)
from sutra.data.loader import TokenLoader
from sutra.errors import SutraError
from sutra.eval.perplexity import perplexity
from sutra.model.checkpoint import load_model

TEXTS = [f"Lesson {i}: water evaporates, condenses into clouds and falls as rain; plants use light to make sugar." * (1 + i % 3) for i in range(12)]


def prepared(directory, tokenizer):
    from sutra.data.writer import ShardWriter

    writer = ShardWriter(directory)
    for split, texts in (("train", TEXTS[:8]), ("val", TEXTS[8:])):
        ids = [tokens + [tokenizer.document_separator_id] for tokens in tokenizer.encode_batch(texts)]
        writer.add(split, np.concatenate(ids), np.array([len(x) for x in ids]))
    writer.flush()
    writer.finish(tokenizer)
    return directory


def test_perplexity_is_exp_of_mean_token_loss_over_every_window(tiny_model, tokenizer, tmp_path):
    data = prepared(tmp_path / "data", tokenizer)
    loaded = load_model(str(tiny_model[0]))
    result = perplexity(loaded, str(data), seq_len=32, batch_size=3)
    loader = TokenLoader(data, split="val", seq_len=32, micro_batch=100)
    assert result["windows"] == loader.windows_per_epoch > 0 and result["tokens"] == 32 * result["windows"]
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader.iter_eval():  # independent of the model's chunked loss: full logits
            logits = loaded.model(batch.inputs, doc_ids=batch.doc_ids)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="sum"))
            count += batch.targets.numel()
    assert math.isclose(result["perplexity"], math.exp(total / count), rel_tol=1e-5)


def test_causal_attention_scores_across_the_documents_of_a_window_as_a_causal_run_validates(tiny_model, tokenizer, tmp_path):
    data = prepared(tmp_path / "data", tokenizer)
    loaded = load_model(str(tiny_model[0]))
    causal = perplexity(loaded, str(data), seq_len=32, batch_size=3, attention="causal")
    document = perplexity(loaded, str(data), seq_len=32, batch_size=3)
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in TokenLoader(data, split="val", seq_len=32, micro_batch=100).iter_eval():
            logits = loaded.model(batch.inputs)  # one causal mask over the whole window
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), reduction="sum"))
            count += batch.targets.numel()
    assert math.isclose(causal["perplexity"], math.exp(total / count), rel_tol=1e-5)
    assert (causal["attention"], document["attention"]) == ("causal", "document")
    assert not math.isclose(causal["perplexity"], document["perplexity"], rel_tol=1e-4)  # the windows do hold several documents


def test_cli_writes_perplexity_with_token_count(tiny_model, tokenizer, tmp_path):
    data = prepared(tmp_path / "data", tokenizer)
    out = tmp_path / "r.json"
    result = run_sutra("eval", str(tiny_model[0]), "--perplexity", str(data), "--seq-len", "32", "--out", str(out), check=True)
    written = json.loads(out.read_text())["perplexity"]
    assert "validation perplexity" in result.stdout and f"{written['tokens']:,} tokens" in result.stdout
    assert written["split"] == "val" and written["perplexity"] > 1


def test_nothing_to_evaluate_is_a_clear_error(tiny_model):
    result = run_sutra("eval", str(tiny_model[0]))
    assert result.returncode == 2 and "nothing to evaluate" in result.stderr


def test_arguments_that_would_fail_after_the_benchmarks_fail_before_them(tiny_model, tmp_path):
    """A wrong --perplexity path or an --out that is a directory used to surface only after every
    task had run (and the directory case as a traceback); a --limit of 1.5 ran 1 document while the
    results recorded 1.5."""
    (tmp_path / "outdir").mkdir()
    for args, message in (
        (("--perplexity", str(tmp_path / "nodata")), f"{tmp_path / 'nodata'}: no such dataset directory or mix manifest"),
        (("--out", str(tmp_path / "outdir")), f"--out {tmp_path / 'outdir'}: is a directory; give the results file to write, e.g. {tmp_path / 'outdir' / 'results.json'}"),
        (("--limit", "1.5"), "--limit 1.5: give a whole number of documents (e.g. 1) or a fraction below 1 (e.g. 0.1)"),
    ):
        result = run_sutra("eval", str(tiny_model[0]), "--tasks", "piqa", *args)
        assert result.returncode == 2 and result.stderr.startswith(f"sutra: error: {message}"), result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""  # one line, and nothing was evaluated
    assert list(tmp_path.glob(".*")) == []  # no journal left beside the directory


def test_perplexity_data_it_cannot_score_stops_the_run_before_the_benchmarks(tiny_model, tokenizer, tmp_path, capsys, benchmarks):
    """A validation split shorter than one window (or of another tokenizer) used to be found only after
    every task had run (hours for the card's 11 on a CPU), and the results were not written."""
    from sutra.cli import main

    data = prepared(tmp_path / "data", tokenizer)  # a few hundred validation tokens: no 513-token window of the 512-token model
    args = ["eval", str(tiny_model[0]), "--tasks", "piqa", "--limit", "2", "--perplexity", str(data), "--out", str(tmp_path / "r.json")]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert re.search(rf"sutra: error: {re.escape(str(data))}: the validation split has \d+ tokens, fewer than the 513 a window of 512 needs; use a smaller --seq-len\n$", err), err
    assert "PIQA" not in out and list(tmp_path.glob(".r.json*")) == []  # no task ran, so no journal of answers either
    assert main([*args, "--seq-len", "1024"]) == 2  # longer than the model's context: it was cut to 512 silently
    assert capsys.readouterr()[1].endswith("a window of 1024 tokens is longer than the model's context of 512; give --seq-len 512 or less\n")
    assert main([*args, "--seq-len", "32"]) == 0
    written, out = json.loads((tmp_path / "r.json").read_text()), capsys.readouterr().out
    assert written["tasks"]["piqa"]["items"] == 2 and written["perplexity"]["seq_len"] == 32 and written["model"]["dtype"] == "float32"
    assert out.index("PIQA") < out.index("validation perplexity")  # printed in the same order as before
    # an empty validation split: a smaller --seq-len, as the message said, cannot help
    from sutra.data.prepare import PrepareConfig, prepare

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
    empty = tmp_path / "no-val"
    prepare(PrepareConfig(sources=(str(tmp_path / "docs.jsonl"),), out=empty, workers=1, val_fraction=0, min_val_docs=0), log=open(os.devnull, "w"))
    assert main(["eval", str(tiny_model[0]), "--perplexity", str(empty)]) == 2
    assert capsys.readouterr()[1].endswith(f"{empty}: the validation split is empty (prepared with --val-fraction 0?); prepare the data with a validation share\n")


def test_non_positive_window_counts_and_sizes_are_refused_naming_the_flag(tiny_model, tokenizer, tmp_path):
    # argparse refuses them before any model loads (--max-windows 0 used to divide by zero, --seq-len 0
    # silently meant the default, --batch-size 0 silently meant 1)
    for flag, value, message in (("--max-windows", "0", "must be at least 1, got 0"), ("--seq-len", "0", "must be at least 1, got 0"),
                                 ("--batch-size", "0", "must be at least 1, got 0"), ("--max-windows", "-3", "must be at least 1, got -3"),
                                 ("--seq-len", "x", "must be a whole number, got 'x'")):
        result = run_sutra("eval", str(tiny_model[0]), "--perplexity", str(tmp_path), flag, value)
        assert result.returncode == 2 and f"argument {flag}: {message}" in result.stderr and "Traceback" not in result.stderr, (flag, value, result.stderr)
    # the library call refuses them too, instead of scoring nothing
    data = prepared(tmp_path / "data", tokenizer)
    with pytest.raises(SutraError, match="max_windows must be at least 1, got 0"):
        perplexity(load_model(str(tiny_model[0])), str(data), seq_len=32, max_windows=0)


def test_hub_dataset_id_as_perplexity_data_says_to_prepare_it_first(tiny_model):
    result = run_sutra("eval", str(tiny_model[0]), "--perplexity", "someone/some-dataset")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sutra data prepare someone/some-dataset --out DIR" in result.stderr and "Parquet" in result.stderr


def test_a_diverged_models_perplexity_is_capped_as_the_trainers_not_a_traceback(tiny_model, tokenizer, tmp_path):
    # huge logits: over 709 nats a token, where math.exp used to raise OverflowError
    data = prepared(tmp_path / "data", tokenizer)
    loaded = load_model(str(tiny_model[0]))
    with torch.no_grad():
        loaded.model.embed.weight.mul_(1000)
    result = perplexity(loaded, str(data), seq_len=32)
    assert result["loss"] > 709 and result["perplexity"] == math.exp(700.0)
