"""Fully sharded data parallelism (`train.parallel: fsdp`, PyTorch's FSDP2 `fully_shard`).

Each process keeps 1/N of the weights, gradients and AdamW moments, and gathers a block's weights
only while the block runs, so a model whose training state outgrows one GPU's memory under
DistributedDataParallel still trains. The checkpoints are the same full files DDP writes — the
weights under their usual names and the optimizer state as `Optimizer.state_dict()` numbers it — so
`sutra generate`/`eval` read them as any other, and a run resumes under either mode on any process
count. Gathering and scattering them are collectives: every process calls these functions together.
"""

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)  # gathered to rank 0's host memory; {} elsewhere
FULL_EVERYWHERE = StateDictOptions(full_state_dict=True)  # every process passes the whole state; each keeps its shard


def shard(model: torch.nn.Module) -> None:
    """Shard each transformer block on its own (gathered one at a time), then the rest — the tied
    embedding/output head and the final norm — as the root unit."""
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)


def full_tensor(value: torch.Tensor) -> torch.Tensor:
    """A sharded scalar (the gradient norm clip_grad_norm_ returns) as a plain tensor."""
    return value.full_tensor() if isinstance(value, DTensor) else value


def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(weights, optimizer state) gathered whole on rank 0, in the formats an unsharded run saves."""
    weights = get_model_state_dict(model, options=FULL_ON_RANK0)
    if not optimizer.state:  # no update applied yet (every step skipped, unfused): torch's gather would
        return weights, optimizer.state_dict()  # take a zero step to make the state it gathers
    by_name = get_optimizer_state_dict(model, optimizer, options=FULL_ON_RANK0)
    if not by_name:
        return weights, {}
    names = [name for group in by_name["param_groups"] for name in group["params"]]
    number = {name: i for i, name in enumerate(names)}
    groups, first = [], 0
    for group in by_name["param_groups"]:
        groups.append({**group, "params": list(range(first, first + len(group["params"])))})
        first += len(group["params"])
    return weights, {"state": {number[name]: state for name, state in by_name["state"].items()}, "param_groups": groups}


def load_full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, weights: dict, optimizer_state: dict) -> None:
    """Every process passes the whole saved state (as `full_state` returns it); each keeps its shard."""
    set_model_state_dict(model, weights, options=FULL_EVERYWHERE)
    if not optimizer_state["state"]:  # (as in full_state: the scatter would take a zero step first)
        optimizer.load_state_dict(optimizer_state)
        return
    name_of = {id(p): name for name, p in model.named_parameters()}
    groups, by_number = [], {}
    for group, own in zip(optimizer_state["param_groups"], optimizer.param_groups, strict=True):
        names = [name_of[id(p)] for p in own["params"]]
        by_number |= dict(zip(group["params"], names, strict=True))
        groups.append({**group, "params": names})
    state = {by_number[number]: value for number, value in optimizer_state["state"].items()}
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups}, options=FULL_EVERYWHERE)
