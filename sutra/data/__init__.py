"""Data pipeline: corpora → tokenized uint16 shards with a document index → mixtures → a resumable loader."""
