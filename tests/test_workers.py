"""scripts/test.sh runs the suite in pytest-xdist workers; each must keep to its share of the cores."""

import os

import pytest


def test_each_worker_runs_torch_on_its_share_of_the_cores():
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers == 1:
        pytest.skip("the suite runs in one process")
    import torch

    # tests/conftest.py sets OMP_NUM_THREADS (unless it was given) before anything imports torch,
    # which reads it once: a worker that imported torch earlier would run on every core
    assert torch.get_num_threads() == int(os.environ["OMP_NUM_THREADS"])
