import json

import numpy as np
import pytest
import torch

from data_helpers import small_dataset  # noqa: F401 (fixture)
from sutra.data.loader import TokenLoader
from sutra.errors import SutraError

ENDOFTEXT = "<|endoftext|>"


def epoch_windows(loader: TokenLoader) -> list[tuple[int, ...]]:
    """The full windows (inputs + last target) of the rest of the current epoch, via next_batch."""
    epoch, windows = loader.epoch, []
    while loader.epoch == epoch:
        batch = loader.next_batch()
        full = torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1)
        windows += [tuple(row) for row in full.tolist()]
    return windows


def test_windows_decode_to_the_source_documents(small_dataset, tokenizer):
    directory, train, _ = small_dataset
    loader = TokenLoader(directory, "train", seq_len=16, micro_batch=3)
    batches = list(loader.iter_eval())
    for batch in batches:
        assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
    # consecutive windows overlap by one token: the inputs tile the stream, plus the very last target
    stream = torch.cat([b.inputs for b in batches]).flatten().tolist() + [batches[-1].targets[-1, -1].item()]
    joined = "".join(doc + ENDOFTEXT for doc in train)
    decoded = tokenizer.decode(stream)
    assert len(stream) == loader.windows_per_epoch * 16 + 1
    assert joined.startswith(decoded) and len(decoded) > 0.95 * len(joined)
    assert loader.vocab_size == 49152 and loader.tokenizer_fingerprint == tokenizer.fingerprint


def test_doc_ids_restart_per_window_and_follow_endoftext(small_dataset):
    directory, _, _ = small_dataset
    loader = TokenLoader(directory, "train", seq_len=32, micro_batch=4, seed=3)
    for _ in range(10):
        batch = loader.next_batch()
        assert batch.doc_ids.dtype == torch.int32 and batch.doc_ids.shape == batch.inputs.shape
        separators = (batch.inputs == 0).to(torch.int32)
        # a token belongs to the document of the <|endoftext|> that follows it
        expected = torch.cumsum(separators, dim=1) - separators
        assert torch.equal(batch.doc_ids, expected)
        assert (batch.doc_ids[:, 0] == 0).all()


def test_one_epoch_visits_every_window_once_in_a_seeded_order(small_dataset):
    directory, _, _ = small_dataset
    in_order = []
    for batch in TokenLoader(directory, "train", seq_len=16, micro_batch=5).iter_eval():
        in_order += [tuple(r) for r in torch.cat([batch.inputs, batch.targets[:, -1:]], dim=1).tolist()]
    loader = TokenLoader(directory, "train", seq_len=16, micro_batch=4, seed=7)
    first = epoch_windows(loader)
    skipped = loader.state_dict()["skipped_windows"]
    assert skipped == loader.windows_per_epoch % 4 and loader.epoch == 1 and loader.cursor == 0
    assert len(first) == loader.windows_per_epoch - skipped
    assert set(first) <= set(in_order) and len(set(first)) == len(first)
    assert first != sorted(first, key=in_order.index)  # shuffled
    assert epoch_windows(TokenLoader(directory, "train", seq_len=16, micro_batch=4, seed=7)) == first
    assert epoch_windows(TokenLoader(directory, "train", seq_len=16, micro_batch=4, seed=8)) != first
    assert epoch_windows(loader) != first  # epoch 1 has its own order


def test_ranks_take_disjoint_slices_matching_accumulation(small_dataset):
    directory, _, _ = small_dataset
    single = TokenLoader(directory, "train", seq_len=16, micro_batch=2, seed=1)
    ranks = [TokenLoader(directory, "train", seq_len=16, micro_batch=2, rank=r, world_size=2, seed=1) for r in range(2)]
    for _ in range(6):
        accumulated = torch.cat([single.next_batch().inputs, single.next_batch().inputs])
        parallel = torch.cat([r.next_batch().inputs for r in ranks])
        assert torch.equal(accumulated, parallel)
    assert single.state_dict() == ranks[0].state_dict() == ranks[1].state_dict()


def test_state_restores_exactly_across_epochs_and_world_sizes(small_dataset):
    directory, _, _ = small_dataset
    reference = TokenLoader(directory, "train", seq_len=16, micro_batch=2, rank=0, world_size=2, seed=5)
    for _ in range(130):  # past the end of epoch 0 (each call consumes 4 windows)
        reference.next_batch()
    state = json.loads(json.dumps(reference.state_dict()))
    assert state["epoch"] >= 1
    peer = TokenLoader(directory, "train", seq_len=16, micro_batch=2, rank=1, world_size=2, seed=5)
    peer.load_state_dict(state)
    expected = torch.cat([reference.next_batch().inputs, peer.next_batch().inputs])

    for world_size in (1, 4):
        micro = 4 // world_size
        restored = [TokenLoader(directory, "train", seq_len=16, micro_batch=micro, rank=r, world_size=world_size, seed=0)
                    for r in range(world_size)]
        for loader in restored:
            loader.load_state_dict(state)
        assert torch.equal(torch.cat([loader.next_batch().inputs for loader in restored]), expected)
        assert restored[0].epoch == reference.epoch and restored[0].cursor == reference.cursor


def test_val_split_and_eval_slices(small_dataset, tokenizer):
    directory, _, val = small_dataset
    loader = TokenLoader(directory, "val", seq_len=8, micro_batch=3)
    everything = torch.cat([b.inputs for b in loader.iter_eval()])
    assert len(everything) == loader.windows_per_epoch
    assert tokenizer.decode(everything[0].tolist()) in val[0] + ENDOFTEXT
    slices = [torch.cat([b.inputs for b in TokenLoader(directory, "val", seq_len=8, micro_batch=3, rank=r, world_size=3).iter_eval()])
              for r in range(3)]
    assert torch.equal(torch.cat(slices), everything)
    limited = torch.cat([b.inputs for b in loader.iter_eval(max_windows=4)])
    W = loader.windows_per_epoch
    assert W >= 8 and torch.equal(limited, everything[[0, W // 4, W // 2, 3 * W // 4]]), "spread over the split, not its start"


def test_bad_uses_are_clear_errors(small_dataset, tmp_path):
    directory, _, _ = small_dataset
    with pytest.raises(SutraError, match="no manifest.json"):
        TokenLoader(tmp_path)
    from sutra.data.shards import read_manifest  # (what `data stats` and `data mix` read: they said "no manifest.json")

    with pytest.raises(SutraError, match="nope: no such dataset directory; create it with `sutra data prepare`"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "mix.txt").write_text("x")
    with pytest.raises(SutraError, match=r"mix.txt: a file, not a prepared dataset directory"):
        read_manifest(tmp_path / "mix.txt")
    with pytest.raises(SutraError, match="fewer than one global batch"):
        TokenLoader(directory, "val", seq_len=4096, micro_batch=1).next_batch()
    loader = TokenLoader(directory, "train", seq_len=16)
    state = loader.state_dict()
    with pytest.raises(SutraError, match="seq_len"):
        TokenLoader(directory, "train", seq_len=32).load_state_dict(state)
    with pytest.raises(SutraError, match="unknown split"):
        TokenLoader(directory, "test")


def test_truncated_shard_is_refused(small_dataset, tmp_path):
    import shutil

    directory, _, _ = small_dataset
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    shard = copy / "train-00001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(SutraError, match="train-00001.bin: size does not match"):
        TokenLoader(copy)
    assert np.fromfile(copy / "train-00000.idx", dtype="<u8")[-1] > 0
