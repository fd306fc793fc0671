import pytest
import torch

from sutra.errors import SutraError
from sutra.model.llama import Llama
from sutra.model.config import ModelConfig
from sutra.model.generate import StreamDecoder, generate, generate_batch

CONFIG = ModelConfig(64, 128, 2, 4, 2, vocab_size=300, max_seq_len=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Llama(CONFIG).eval()


def _greedy_without_cache(model, prompt, n):
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def test_kv_cache_generation_equals_full_recomputation(model):
    prompt = [5, 17, 42, 99, 3]
    assert generate(model, prompt, max_new_tokens=12) == _greedy_without_cache(model, prompt, 12)


def test_sampling_is_reproducible_with_a_seed_and_top_k_1_is_greedy(model):
    prompt = [1, 2, 3]
    a = generate(model, prompt, 10, temperature=1.0, seed=7)
    b = generate(model, prompt, 10, temperature=1.0, seed=7)
    assert a == b
    assert generate(model, prompt, 10, temperature=1.0, top_k=1, seed=3) == generate(model, prompt, 10)
    assert generate(model, prompt, 10, temperature=0.8, top_p=1e-6, seed=3) == generate(model, prompt, 10)
    # logits / 1e-45 overflowed to +-inf and softmax to NaN: "probability tensor contains either inf, nan"
    assert generate(model, prompt, 10, temperature=1e-45, seed=3) == generate(model, prompt, 10)


def test_generation_stops_at_eos_and_at_the_context(model):
    prompt = [1, 2, 3]
    first = generate(model, prompt, 5)[0]
    assert generate(model, prompt, 5, stop_ids={first}) == [first]
    # context 64: the last token is never fed back, so 60 prompt tokens leave room for 5 and 64 for 1
    assert len(generate(model, list(range(60)), 50)) == 5
    assert generate(model, list(range(64)), 5) == _greedy_without_cache(model, list(range(64)), 1)
    with pytest.raises(SutraError, match="context"):
        generate(model, list(range(65)), 5)
    for bad in ({"temperature": -1.0}, {"temperature": 1.0, "top_p": 0.0}, {"temperature": 1.0, "top_k": -2}):
        with pytest.raises(SutraError, match="sampling needs temperature >= 0, top_k >= 1 and 0 < top_p <= 1"):
            generate(model, prompt, 5, **bad)
    with pytest.raises(SutraError, match="empty"):
        generate(model, [], 5)


@pytest.mark.parametrize("max_rows", [None, 2, 1])
def test_batched_generation_equals_each_prompt_alone_as_rows_finish_and_refill(model, max_rows):
    """Prompts of different lengths share the cache unpadded; a finished row takes the next prompt
    (max_rows 2 and 1) or leaves the batch (no prompt waiting); no token changes."""
    prompts = [[5, 17, 42, 99, 3, 8, 1], [7], [2, 2, 9], [11, 12, 13, 14, 15, 16, 17], [40, 41], [9, 8, 7, 6, 5]]
    expected = [_greedy_without_cache(model, p, 10) for p in prompts]
    assert generate_batch(model, prompts, 10, max_rows=max_rows) == expected

    stop_after = {0: 2, 1: 7, 2: 1, 3: 10, 4: 1, 5: 4}  # prompt 2 ends at its first token, then prompt 4 too
    seen = {index: 0 for index in stop_after}

    def on_token(index, token_id):
        seen[index] += 1
        return seen[index] == stop_after[index]

    out = generate_batch(model, prompts, 10, on_token=on_token, max_rows=max_rows)
    assert out == [ids[: stop_after[index]] for index, ids in enumerate(expected)]


def test_each_prompt_keeps_its_own_context_limit_sampler_and_finish(model):
    """A long prompt near the context does not shorten a short one; sampling with a seed does not
    depend on how many rows decode together; max_new_tokens 0 generates nothing."""
    long, short = list(range(1, 60)), [5, 17, 42]  # context 64: the long prompt has room for 6 tokens
    finished = []
    out = generate_batch(model, [long, short], 20, on_finish=finished.append)
    assert out == [_greedy_without_cache(model, long, 6), _greedy_without_cache(model, short, 20)]
    assert sorted(finished) == [0, 1]
    prompts = [short, [7], [2, 2, 9], long]
    sampled = {rows: generate_batch(model, prompts, 8, temperature=1.0, seed=11, max_rows=rows) for rows in (None, 2, 1)}
    assert sampled[None] == sampled[2] == sampled[1]
    assert sampled[1][0] == generate(model, short, 8, temperature=1.0, seed=11), "prompt i samples from seed + i"
    finished = []
    assert generate_batch(model, prompts, 0, on_finish=finished.append) == [[], [], [], []]
    assert finished == [0, 1, 2, 3]  # every prompt's generation ends, even one that never began


def test_stream_decoder_waits_for_complete_characters(tokenizer):
    ids = tokenizer.encode("héllo 🤗 wörld")
    decoder = StreamDecoder(tokenizer)
    text = "".join(decoder.push(i) for i in ids)
    assert text == "héllo 🤗 wörld"


def test_stream_decoder_keeps_the_space_a_sentencepiece_word_starts_with(tmp_path):
    """A Metaspace (SentencePiece, Llama-2 style) tokenizer drops the leading space of the first
    word it decodes: the continuation of "The cat" printed "sat" where the text is " sat"."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, trainers

    from sutra.tokenizer import Tokenizer

    backend = Backend(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.train_from_iterator(["the cat sat on the mat", "a cat and a hat"] * 20, trainers.BpeTrainer(special_tokens=["<unk>", "<|endoftext|>"]))
    backend.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer(tmp_path)
    prompt, continuation = tokenizer.encode("the cat"), tokenizer.encode("the cat sat on the mat")[len(tokenizer.encode("the cat")):]
    assert tokenizer.decode(continuation) == "sat on the mat"  # decoded alone: the space is lost
    decoder = StreamDecoder(tokenizer, context=prompt)
    assert "".join(decoder.push(i) for i in continuation) == " sat on the mat"


def test_the_command_says_when_the_context_and_not_max_new_tokens_stopped_it(tmp_path, tokenizer, capsys):
    """`sutra generate --max-new-tokens 2000` on a short-context model stopped at the context without a word."""
    from sutra.cli import main
    from sutra.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "ckpt", Llama(ModelConfig(64, 96, 1, 4, 2, max_seq_len=32)), tokenizer)
    assert main(["generate", str(checkpoint), "--prompt", "The river", "--max-new-tokens", "200"]) == 0
    room = 32 - len(tokenizer.encode("The river", add_special_tokens=True)) + 1
    assert capsys.readouterr().err.endswith(f"sutra: stopped after {room} new tokens, at the model's context of 32 (--max-new-tokens 200 asked for more)\n")
    assert main(["generate", str(checkpoint), "--prompt", "The river", "--max-new-tokens", "5"]) == 0
    assert "stopped after" not in capsys.readouterr().err
