"""Which model a runner was given: its family, the parts the runner calls, its architecture key.

Two families share one block structure (``norm_mlstm -> mlstm_layer -> + -> norm_ffn -> ffn -> +``):
NX-AI ``xlstm``'s ``xLSTMLarge`` and Hugging Face ``transformers``' ``xLSTMForCausalLM``, whose blocks
are ``xlstm``'s ``mLSTMBlock`` when that package is installed and transformers' own copy otherwise.
The runner calls the model's own norms, projections and feed-forward modules and replaces only the
mLSTM backend call, so it never modifies the model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .errors import UnsupportedModelError

FAMILIES = {  # family -> (class name, top-level package of the defining module)
    "xlstm_large": ("xLSTMLarge", "xlstm"),
    "transformers": ("xLSTMForCausalLM", "transformers"),
}
_SINGLE = ("q", "k", "v", "ogate_preact", "igate_preact", "fgate_preact")
_FUSED = ("qkv_opreact", "ifgate_preact")


@dataclass(frozen=True, eq=False)
class ModelParts:
    """The modules and constants of a model the runner's graphs are built from (shared, not copied)."""

    family: str
    embedding: nn.Embedding
    blocks: tuple[nn.Module, ...]
    out_norm: nn.Module
    lm_head: nn.Linear
    num_heads: int
    dhqk: int
    dhv: int
    eps: float  # the mLSTM's
    gate_soft_cap: float | None
    logit_soft_cap: float | None
    float_logits: bool  # transformers returns float32 logits; xLSTMLarge the weights' dtype
    weight_mode: str  # "single" | "fused"

    @property
    def vocab_size(self) -> int:
        return self.lm_head.out_features

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embedding.weight.dtype


def family_of(model: nn.Module) -> str:
    """``xlstm_large`` or ``transformers``; raises UnsupportedModelError for anything else."""
    cls = type(model)
    for family, (name, package) in FAMILIES.items():
        if cls.__name__ == name and cls.__module__.split(".")[0] == package:
            return family
    known = " or ".join(f"{pkg}'s {name}" for name, pkg in FAMILIES.values()).replace("s's", "s'")
    hint = " (pass the causal-LM model, not its backbone)" if cls.__name__ in ("xLSTMModel", "xLSTMLargeBlockStack") else ""
    raise UnsupportedModelError(f"the model runner supports {known}; got {cls.__module__}.{cls.__name__}{hint}")


def _missing(module: nn.Module, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not hasattr(module, n)]


def model_parts(model: nn.Module) -> ModelParts:
    """The parts of a supported model; raises UnsupportedModelError naming what does not fit."""
    family = family_of(model)
    backbone = model.backbone
    embedding = model.embedding if family == "xlstm_large" else backbone.embeddings
    blocks = tuple(backbone.blocks)
    if not blocks:
        raise UnsupportedModelError(f"{type(model).__name__} has no blocks")
    first = blocks[0].mlstm_layer.config
    for idx, block in enumerate(blocks):
        missing = _missing(block, ("norm_mlstm", "mlstm_layer", "norm_ffn", "ffn"))
        if missing:
            raise UnsupportedModelError(f"backbone.blocks.{idx} ({type(block).__name__}) is not an mLSTM block: "
                                        f"it has no {', '.join(missing)}")
        layer = block.mlstm_layer
        wanted = _SINGLE if layer.config.weight_mode == "single" else _FUSED
        missing = _missing(layer, wanted + ("multihead_norm", "out_proj", "qk_dim", "v_dim"))
        if missing:
            raise UnsupportedModelError(f"backbone.blocks.{idx}.mlstm_layer ({type(layer).__name__}) has no "
                                        f"{', '.join(missing)}")
        if (layer.config.num_heads, layer.config.weight_mode) != (first.num_heads, first.weight_mode):
            raise UnsupportedModelError(f"backbone.blocks.{idx}: heads/weight mode differ from block 0's")
    layer = blocks[0].mlstm_layer
    nh = layer.config.num_heads
    return ModelParts(
        family=family, embedding=embedding, blocks=blocks, out_norm=backbone.out_norm, lm_head=model.lm_head,
        num_heads=nh, dhqk=layer.qk_dim // nh, dhv=layer.v_dim // nh, eps=float(model.config.eps),
        gate_soft_cap=layer.config.gate_soft_cap, logit_soft_cap=model.config.output_logit_soft_cap,
        float_logits=family == "transformers", weight_mode=layer.config.weight_mode,
    )


def architecture(model: nn.Module) -> dict[str, Any]:
    """What determines the runner's graphs for this model, from its modules (not weights, not dtype)."""
    p = model_parts(model)
    block = p.blocks[0]
    layer = block.mlstm_layer
    return {
        "family": p.family, "vocab_size": p.vocab_size, "embedding_dim": p.embedding.embedding_dim,
        "num_blocks": len(p.blocks), "num_heads": p.num_heads, "dhqk": p.dhqk, "dhv": p.dhv,
        "ffn_dim": block.ffn.proj_down.in_features, "weight_mode": p.weight_mode,
        "use_bias": layer.out_proj.bias is not None, "eps": p.eps, "norm_eps": float(block.norm_mlstm.eps),
        "gate_soft_cap": p.gate_soft_cap, "logit_soft_cap": p.logit_soft_cap,
        "out_norm": not isinstance(p.out_norm, nn.Identity),
        "norm_reduction_force_float32": bool(getattr(block.norm_mlstm, "force_float32_reductions", True)),
    }


def model_key(model: nn.Module) -> str:
    """Stable 16-hex-digit hash of the model's architecture (family, shapes, caps, eps; not weights,
    not dtype or device): the model part of a ``model`` workload's key."""
    text = json.dumps(architecture(model), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
