"""FSDP2's full-state gather and scatter (sutra/train/sharding.py) in one gloo process: the formats an
unsharded run saves, both ways, and an optimizer that has taken no step yet left without one."""

import pytest
import torch
import torch.distributed as dist

from sutra.model.config import get_preset
from sutra.model.llama import Llama
from sutra.train.sharding import full_state, load_full_state, shard
from train_helpers import MICRO_MODEL

CONFIG = get_preset("tiny").replace(**{**MICRO_MODEL, "vocab_size": 256})


@pytest.fixture
def process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def model_and_optimizer(sharded: bool):
    torch.manual_seed(0)
    model = Llama(CONFIG)
    if sharded:
        shard(model)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1}, {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return model, torch.optim.AdamW(groups, lr=1e-2, fused=False)


def step(model, optimizer) -> None:
    tokens = torch.arange(2 * 17).view(2, 17) % CONFIG.vocab_size
    model(tokens[:, :-1], tokens[:, 1:]).backward()
    optimizer.step()
    optimizer.zero_grad()


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys() and [g["params"] for g in a["param_groups"]] == [g["params"] for g in b["param_groups"]]
    for number, state in a["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(b["state"][number][key], value, rtol=1e-6, atol=1e-7)


def test_full_state_is_what_an_unsharded_run_saves_and_loads_back(process_group):
    plain, plain_optimizer = model_and_optimizer(sharded=False)
    model, optimizer = model_and_optimizer(sharded=True)
    empty = plain_optimizer.state_dict()
    # before any update: no state, and gathering or scattering it must not take a (zero) step to make one
    weights, state = full_state(model, optimizer)
    assert not optimizer.state and state["state"] == {} and state["param_groups"] == empty["param_groups"]
    for optimizer_ in (plain_optimizer, optimizer):
        step(plain if optimizer_ is plain_optimizer else model, optimizer_)
    weights, state = full_state(model, optimizer)
    assert weights.keys() == plain.state_dict().keys()
    for name, value in plain.state_dict().items():
        torch.testing.assert_close(weights[name], value, rtol=1e-6, atol=1e-7)
    assert_same_optimizer_state(plain_optimizer.state_dict(), state)
    # scattered back: an empty state (a rollback to a checkpoint saved before any update) empties it
    load_full_state(model, optimizer, plain.state_dict(), empty)
    assert not optimizer.state
    load_full_state(model, optimizer, plain.state_dict(), plain_optimizer.state_dict())
    assert_same_optimizer_state(plain_optimizer.state_dict(), full_state(model, optimizer)[1])
