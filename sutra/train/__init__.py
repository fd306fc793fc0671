"""Pretraining: YAML recipes, LR schedules, the training loop, run directories and exact resume."""
