import os

import pytest

from sutra.errors import SutraError
from sutra.tokenizer import load_tokenizer


def test_smollm2_tokenizer_facts(tokenizer):
    assert tokenizer.vocab_size == 49152
    # Base SmolLM2 roles: <|endoftext|> is bos and eos for pretraining (the GGUF's Instruct roles are reset).
    assert tokenizer.eos_id == tokenizer.bos_id == tokenizer.document_separator_id == 0
    assert tokenizer.backend.token_to_id("<|im_start|>") == 1
    assert tokenizer.backend.token_to_id("<|im_end|>") == 2
    assert tokenizer.encode("The quick brown fox jumps over the lazy dog.") == [504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30]


def test_numbers_split_into_digits_and_text_round_trips(tokenizer):
    ids = tokenizer.encode(" 2024")
    assert [tokenizer.decode([i]) for i in ids] == [" ", "2", "0", "2", "4"]
    text = "  Leading spaces, émojis 🤗, and numbers 1234567 — ok?\n\tdef f(x): return x"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_no_bos_or_eos_added_automatically(tokenizer):
    assert tokenizer.encode("hello")[0] != 0 and tokenizer.encode("hello")[-1] != 0
    assert tokenizer.encode_batch(["a b", "c"]) == [tokenizer.encode("a b"), tokenizer.encode("c")]


def test_tokenizer_from_directory_and_file_matches_asset(tokenizer, tmp_path):
    tokenizer.save(tmp_path)
    assert load_tokenizer(tmp_path).fingerprint == tokenizer.fingerprint
    assert load_tokenizer(tmp_path / "tokenizer.json").encode("x y z") == tokenizer.encode("x y z")


def test_a_tokenizer_saved_with_truncation_and_padding_still_gives_every_id(tokenizer, tmp_path):
    """As `sutra data prepare` reads it too: whole documents, not cut at max_length and padded."""
    import json

    import numpy as np

    from sutra.data.prepare import PrepareConfig, prepare

    saved_with = tmp_path / "tokenizer"
    tokenizer.save(saved_with)
    saved = json.loads((saved_with / "tokenizer.json").read_text())
    saved["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}
    saved["padding"] = {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": None, "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"}
    (saved_with / "tokenizer.json").write_text(json.dumps(saved))
    texts = ["The quick brown fox jumps over the lazy dog and keeps on running far away.", "hi"]
    reloaded = load_tokenizer(saved_with)
    assert [reloaded.encode(t) for t in texts] == reloaded.encode_batch(texts) == [tokenizer.encode(t) for t in texts]
    assert reloaded.fingerprint == tokenizer.fingerprint  # the same ids: data prepared with either is interchangeable

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    prepare(PrepareConfig(sources=(str(tmp_path / "docs.jsonl"),), out=tmp_path / "out", tokenizer=str(saved_with), workers=1, val_fraction=0, min_val_docs=0),
            log=open(os.devnull, "w"))
    shard = tmp_path / "out" / "train-00000.bin"
    tokens = np.fromfile(shard, dtype=np.uint16, offset=256).tolist()
    assert tokens == [i for t in texts for i in tokenizer.encode(t) + [tokenizer.document_separator_id]]


def test_bad_tokenizer_sources_are_clear_errors(tmp_path):
    with pytest.raises(SutraError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(SutraError, match="not a valid tokenizer"):
        load_tokenizer(tmp_path)
    with pytest.raises(SutraError, match="not a tokenizer"):
        load_tokenizer(str(tmp_path / "missing.txt"))
    # another .json file was taken for the tokenizer.json beside it: data tokenized with another vocabulary
    for other in ("wordlevel.json", "tokenizer_config.json"):
        (tmp_path / other).write_text("{}")
        with pytest.raises(SutraError, match=rf"{other}: a tokenizer file is named tokenizer.json"):
            load_tokenizer(str(tmp_path / other))


def test_a_vocabulary_with_gaps_in_its_ids_sizes_by_its_largest_id(tmp_path):
    """Ids 0, 1, 500 and an added token's 3: the count of tokens, 4, would size an embedding
    that id 500 falls outside of."""
    from tokenizers import Tokenizer as Backend, models

    from sutra.tokenizer import Tokenizer

    backend = Backend(models.WordLevel({"<unk>": 0, "a": 1, "b": 500}, unk_token="<unk>"))
    backend.add_special_tokens(["<|endoftext|>"])
    backend.save(str(tmp_path / "tokenizer.json"))
    tokenizer = Tokenizer(tmp_path)
    assert backend.get_vocab_size(with_added_tokens=True) == 4 and tokenizer.vocab_size == 501


def test_a_tokenizer_that_ships_its_own_code_loads_without_running_it(tokenizer, tmp_path):
    """transformers' "pass trust_remote_code=True" ValueError came through as a traceback."""
    import json

    tokenizer.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "auto_map": {"AutoTokenizer": ["tok.MyTokenizer", None]}}))
    (tmp_path / "tok.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    assert load_tokenizer(tmp_path).hf()("x y z")["input_ids"] == tokenizer.encode("x y z")
    assert not (tmp_path / "ran").exists()
