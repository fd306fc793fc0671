"""The adapter where lm-eval's `hf` model (HFLM) stops generating, or refuses a request."""

import pytest
import torch
from lm_eval.api.instance import Instance

from eval_helpers import benchmarks, tiny_model  # noqa: F401 (fixtures)
from sutra.errors import SutraError
from sutra.eval.adapter import SutraLM
from sutra.model.checkpoint import load_model
from sutra.model.generate import generate_batch

PROMPT = "Question: 2+2?\nAnswer:"
IM_END = 2  # <|im_end|>: a special token, and one of gsm8k's stop strings, but not the base tokenizer's EOS
GSM8K_SETTINGS = {"until": ["Question:", "</s>", "<|im_end|>"], "do_sample": False, "temperature": 0.0, "max_gen_toks": 12}


@pytest.fixture(scope="module")
def im_end_model(tiny_model, tmp_path_factory):
    """The tiny model, made to write <|im_end|> mid-answer and go on after it: <|im_end|>'s (tied)
    embedding becomes a token's it writes greedily, scaled by 1.001, so it wins where that one did."""
    from sutra.model.checkpoint import save_checkpoint
    from sutra.model.export import export_hf

    loaded = load_model(str(tiny_model[0]))
    model, prompt = loaded.model, loaded.tokenizer.encode(PROMPT)
    plain = generate_batch(model, [prompt], GSM8K_SETTINGS["max_gen_toks"])[0]
    original = model.embed.weight[IM_END].clone()
    for position in range(1, 8):
        with torch.no_grad():
            model.embed.weight[IM_END] = model.embed.weight[plain[position]] * 1.001
        emitted = generate_batch(model, [prompt], GSM8K_SETTINGS["max_gen_toks"])[0]
        if IM_END in emitted[1:-2] and emitted[-1] != IM_END:
            break
        with torch.no_grad():
            model.embed.weight[IM_END] = original
    else:
        pytest.fail("could not make the tiny model write <|im_end|> mid-answer")
    out = tmp_path_factory.mktemp("im_end_model")
    checkpoint = save_checkpoint(out / "sutra", model, loaded.tokenizer)
    return checkpoint, export_hf(str(checkpoint), str(out / "hf")), loaded.tokenizer.decode(emitted[: emitted.index(IM_END)])


def test_a_stop_string_that_is_a_special_token_ends_generation_as_in_hflm(im_end_model):
    """HFLM's stopping criterion reads the text with special tokens, so gsm8k's "<|im_end|>" stops it;
    the returned text, decoded without special tokens, never shows it. The adapter used to look for
    stop strings in that returned text, so it wrote on past <|im_end|> and answered more."""
    from lm_eval.models.huggingface import HFLM

    checkpoint, hf_dir, before_im_end = im_end_model
    requests = [Instance("generate_until", {}, (PROMPT, GSM8K_SETTINGS), 0)]
    ours = SutraLM(load_model(str(checkpoint))).generate_until(requests, disable_tqdm=True)
    theirs = HFLM(pretrained=str(hf_dir), batch_size=1, device="cpu", dtype="float32").generate_until(requests, disable_tqdm=True)
    assert ours == theirs == [before_im_end]


def test_requests_hflm_refuses_are_one_clear_error_not_a_misaligned_score(tiny_model):
    """HFLM asserts on these; the adapter used to score an empty continuation (0.0, greedy): a choice
    certain to win; raise a raw RuntimeError on a blank context or a continuation longer than the
    context; and generate past a max_gen_toks that left no room for the prompt."""
    lm = SutraLM(load_model(str(tiny_model[0])), max_length=64)
    loglikelihood = lambda *pairs: lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)], disable_tqdm=True)  # noqa: E731
    with pytest.raises(SutraError, match=r"1 to 64 \(the model's context\) continuation tokens; got 10 and 0"):
        loglikelihood((PROMPT, " 4"), (PROMPT, ""))
    with pytest.raises(SutraError, match="at least 1 context token .* got 0 and 2"):
        loglikelihood(("   ", "yes"))
    with pytest.raises(SutraError, match="got 1 and 100"):
        loglikelihood(("x", " y" * 100))
    with pytest.raises(SutraError, match="generating up to 64 tokens .* leaves no room for the prompt in the model's context of 64 tokens"):
        lm.generate_until([Instance("generate_until", {}, (PROMPT, {**GSM8K_SETTINGS, "max_gen_toks": 64}), 0)], disable_tqdm=True)


def test_a_diverged_model_is_refused_not_scored(tiny_model, tmp_path, benchmarks):
    """NaN log-likelihoods would reach lm-eval as answers: acc takes the first NaN choice as the
    argmax, so a diverged checkpoint would get a plausible score. The run stops with one line."""
    from sutra.model.checkpoint import save_checkpoint
    from sutra_testing import run_sutra

    loaded = load_model(str(tiny_model[0]))
    with torch.no_grad():
        loaded.model.blocks[0].mlp_norm.weight[0] = float("nan")
    diverged = save_checkpoint(tmp_path / "diverged", loaded.model, loaded.tokenizer)
    result = run_sutra("eval", str(diverged), "--tasks", "piqa", "--limit", "2", "--out", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "log-likelihoods are not finite" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "r.json").exists()
