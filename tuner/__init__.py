"""Optuna studies that probe, validate and time candidate kernel configs."""
