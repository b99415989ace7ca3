"""Which config a call uses when none is given."""

from __future__ import annotations

import torch

from .config import DEFAULT_CONFIG, KernelConfig


def config_for(q: torch.Tensor, v: torch.Tensor, mode: str = "prefill") -> KernelConfig:
    """The config for a call with these inputs: the default config (profiles are not loaded yet)."""
    return DEFAULT_CONFIG
