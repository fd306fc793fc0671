import os

import pytest

# Under pytest-xdist each worker, and every command it starts, gets an equal share of the cores:
# two workers running torch on 2 threads each on 2 cores contend and finish later than one.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(scope="session")
def tokenizer():
    from sutra.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def teacher_dir():
    from sutra import assets

    return assets.ensure("smollm2-135m-instruct")
