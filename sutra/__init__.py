"""Sutra: pretrain, evaluate and publish small Llama language models on pedagogical data."""

__version__ = "0.1.0"
