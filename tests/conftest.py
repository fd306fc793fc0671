import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from sutra.tokenizer import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def teacher_dir():
    from sutra import assets

    return assets.ensure("smollm2-135m-instruct")
