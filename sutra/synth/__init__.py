"""Synthesis of pedagogical pretraining text: knowledge graph, generation, judging, diversity,
rephrasing and cleaning, written as resumable JSONL shards in the sutra-10B 13-field schema."""
