"""The search space: family x chunk_size x heads_per_band x T_inner (+ compile mode, precision on CUDA).

Constraints built in:
* heads_per_band divides NH (the value NH means one band of all heads);
* chunk sizes are powers of two no larger than S (the smallest one if S is shorter), plus the
  default config's chunk size so that the baseline is always a point of the space;
* T_inner comes from the unroll ladder (16, 8, 4, 2, 1); values the sequence cannot fill are
  clamped by the driver, and candidates with the same *effective* kernel are one candidate;
* recurrent configs have no chunk_size parameter (it is only the driver tile, set to 16 so every
  ladder value divides it);
* prefill (sequence) vs. decode (step): a decode step has no family/chunk/band/unroll choice, only
  compile_mode matters;
* on CUDA compile_mode (default / reduce-overhead / max-autotune-no-cudagraphs) and precision
  (fp32 / mixed) are dimensions; on CPU and MPS they are fixed to default / fp32.
* on CPU only, torch's thread count is a dimension (prefill and decode): ``None`` (the process's own
  count, the default config's) and the other counts of :func:`thread_choices`; absent on CUDA/MPS.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from xlstm_kernels.kernels.config import COMPILE_MODES, DEFAULT_CONFIG, FAMILIES, PRECISIONS, T_INNER_LADDER
from xlstm_kernels.kernels.config import KernelConfig, Workload
from xlstm_kernels.device import supports_cuda_graphs
from xlstm_kernels.kernels.drivers import effective_t_inner, plan  # effective_t_inner: re-exported as tuner.effective_t_inner

from ._errors import UnbandableWorkload, UnknownWorkload

CHUNK_SIZES: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
RECURRENT_TILE = max(T_INNER_LADDER)  # every ladder value divides it


def parse_workload(text: str | Workload) -> Workload:
    """A Workload from ``B,NH,S,DHQK,DHV,dtype[,mode]``; raises ``UnknownWorkload`` with the reason."""
    if isinstance(text, Workload):
        return text
    try:
        return Workload.parse(text)
    except ValueError as exc:
        raise UnknownWorkload(f"unknown workload {text!r}: {exc}") from None


def effective_key(config: KernelConfig, workload: Workload) -> str:
    """What actually runs: equal keys compile and execute the same kernel the same way."""
    if workload.mode == "decode":
        return json.dumps({"step": True, "compile_mode": config.compile_mode, **_threads_part(config)})
    p = plan(config, workload.NH, workload.S)
    return json.dumps({
        "family": config.family,
        "chunk_size": config.chunk_size if config.family == "chunkwise" else None,
        "heads_per_band": p.heads_per_band, "t_inner": p.t_inner, "driver": config.driver,
        "compile_mode": config.compile_mode, "precision": config.precision, **_threads_part(config),
    }, sort_keys=True)


def probe_key(config: KernelConfig, workload: Workload) -> str:
    """The compile-probe key of ``config`` on ``workload`` (a compile outcome is per kernel and shape;
    the thread count only changes how Inductor's CPU loops are split across threads, so it is left out)."""
    return f"{workload}|{effective_key(config.replace(threads=None), workload)}"


# -- CPU thread count (issue 16) ------------------------------------------------------------------
# A config's ``threads`` is applied around each call (xlstm_kernels.threads). It changes timing, so it
# is part of the candidate's identity (effective_key, study params, profile entries); ``None`` (the
# process's count) keeps the keys configs had before the field existed.

def _threads_part(config: KernelConfig) -> dict[str, int]:
    return {} if config.threads is None else {"threads": config.threads}


def thread_choices(device: torch.device | str, threads: Sequence[int] | None = None,
                   max_threads: int | None = None) -> tuple[int, ...]:
    """CPU thread counts a space offers besides the process's own (``None``): ``threads`` if given
    (``[]``: none), else 1 .. min(``max_threads``, os.cpu_count()); the current count is left out
    (``None`` is it). Empty off the CPU (a non-empty list given there is an error)."""
    if torch.device(device).type != "cpu":
        if threads:
            raise ValueError(f"threads is tuned on the CPU only, not on {device}")
        return ()
    if threads is not None:
        bad = [t for t in threads if isinstance(t, bool) or not isinstance(t, int) or t < 1]
        if bad:
            raise ValueError(f"threads must be positive integers, got {bad}")
        counts = sorted(set(threads))
    else:
        counts = list(range(1, min(max_threads or os.cpu_count() or 1, os.cpu_count() or 1) + 1))
    return tuple(t for t in counts if t != torch.get_num_threads())


@dataclass(frozen=True)
class SearchSpace:
    """Categorical dimensions for one workload on one device; see the module docstring.

    ``dims`` maps an Optuna parameter name to its choices; ``chunk_size`` is only suggested for the
    chunkwise family. ``candidates()`` lists every distinct valid config of the product of ``dims``
    plus the default config (always a candidate, listed first). TPE samples from
    ``distributions()``, which adds the default's values to each dimension.
    """

    workload: Workload
    dims: dict[str, tuple[Any, ...]]
    default: KernelConfig = field(default=DEFAULT_CONFIG)

    @classmethod
    def for_workload(
        cls,
        workload: Workload | str,
        device: torch.device | str = "cpu",
        *,
        families: Sequence[str] | None = None,
        chunk_sizes: Sequence[int] | None = None,
        heads_per_band: Sequence[int] | None = None,
        t_inners: Sequence[int] | None = None,
        compile_modes: Sequence[str] | None = None,
        precisions: Sequence[str] | None = None,
        default: KernelConfig = DEFAULT_CONFIG,
        threads: Sequence[int] | None = None,
    ) -> SearchSpace:
        """The space for ``workload`` on ``device``; keyword lists narrow a dimension. ``threads``: CPU
        thread counts to try besides the process's own (default: not a dimension; ``from_settings``
        offers :func:`thread_choices`)."""
        wl = parse_workload(workload)
        cuda = supports_cuda_graphs(device)
        modes = tuple(compile_modes or (COMPILE_MODES if cuda else ("default",)))
        precs = tuple(precisions or (PRECISIONS if cuda else ("fp32",)))
        for name, vals, valid in (("compile_mode", modes, COMPILE_MODES), ("precision", precs, PRECISIONS)):
            bad = [v for v in vals if v not in valid]
            if bad:
                raise ValueError(f"{name} choices {bad} are not valid; expected some of {list(valid)}")
        if not cuda and (modes != ("default",) or precs != ("fp32",)):
            raise ValueError(f"compile_mode/precision are tuned on CUDA only; {device} has default/fp32")
        dims: dict[str, tuple[Any, ...]] = {"compile_mode": modes}
        thr = thread_choices(device, threads) if threads else ()
        if thr:  # CPU: the process's count (the default's None) and these
            dims["threads"] = thr
        default = default.replace(compile_mode=modes[0] if default.compile_mode not in modes
                                  else default.compile_mode)
        if wl.mode == "decode":
            return cls(wl, dims, default.replace(precision="fp32"))
        fams = tuple(families or FAMILIES)
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            raise ValueError(f"families {bad} are not valid; expected some of {list(FAMILIES)}")
        divisors = [d for d in range(1, wl.NH + 1) if wl.NH % d == 0]
        hpb = tuple(heads_per_band) if heads_per_band else tuple(divisors)
        bad_hpb = [h for h in hpb if h not in divisors]
        if bad_hpb:
            raise UnbandableWorkload(
                f"heads_per_band {bad_hpb} cannot band NH={wl.NH} heads; valid: {divisors}")
        if chunk_sizes:
            cs = tuple(sorted(set(chunk_sizes)))
        else:
            fit = [c for c in CHUNK_SIZES if c <= wl.S] or [CHUNK_SIZES[0]]
            cs = tuple(sorted(set(fit)))
        unit = 1 if "recurrent" in fams else min(cs)  # the smallest unit any candidate advances by
        t_max = math.ceil(wl.S / unit)
        ts = tuple(t_inners) if t_inners else tuple(t for t in T_INNER_LADDER if t <= t_max) or (1,)
        bad_t = [t for t in ts if t not in T_INNER_LADDER]
        if bad_t:
            raise ValueError(f"t_inner choices {bad_t} are not on the unroll ladder {list(T_INNER_LADDER)}")
        # the default is a point of every space (its baseline is enqueued first), added as one
        # extra point: it widens no dimension of the grid
        dhpb = wl.NH if default.heads_per_band is None else default.heads_per_band
        if wl.NH % dhpb:
            raise UnbandableWorkload(
                f"the default config's heads_per_band={dhpb} cannot band NH={wl.NH}; valid: {divisors}")
        dims.update(family=fams, chunk_size=cs, heads_per_band=hpb, t_inner=ts, precision=precs)
        default = default.replace(heads_per_band=dhpb,
                                  precision=precs[0] if default.precision not in precs else default.precision)
        return cls(wl, dims, default)

    @classmethod
    def from_settings(cls, workload: Workload | str, device: torch.device | str, settings: Any) -> SearchSpace:
        """``for_workload`` narrowed by the ``tune_*`` settings (``XLSTM_AUTOTUNE_TUNE_CHUNK_SIZES=[128,256]``...);
        on CPU the thread counts of ``tune_threads`` / ``tune_max_threads`` (:func:`thread_choices`)."""
        return cls.for_workload(
            workload, device, families=settings.tune_families, chunk_sizes=settings.tune_chunk_sizes,
            heads_per_band=settings.tune_heads_per_band, t_inners=settings.tune_t_inners,
            compile_modes=settings.tune_compile_modes, precisions=settings.tune_precisions,
            threads=thread_choices(device, settings.tune_threads, settings.tune_max_threads),
        )

    # -- params <-> configs ---------------------------------------------------------------------

    def config_from_params(self, params: dict[str, Any]) -> KernelConfig:
        """The KernelConfig a trial's parameters describe."""
        mode = params.get("compile_mode", self.default.compile_mode)
        threads = params.get("threads", self.default.threads)
        if self.workload.mode == "decode":
            return self.default.replace(compile_mode=mode, threads=threads)
        fam = params["family"]
        return KernelConfig(
            family=fam,
            chunk_size=params["chunk_size"] if fam == "chunkwise" else RECURRENT_TILE,
            heads_per_band=params["heads_per_band"], t_inner=params["t_inner"],
            driver=self.default.driver, compile_mode=mode,
            precision=params.get("precision", self.default.precision), threads=threads,
        )

    def params_of(self, config: KernelConfig) -> dict[str, Any]:
        """Inverse of ``config_from_params`` (the parameters to enqueue for ``config``)."""
        params: dict[str, Any] = {"compile_mode": config.compile_mode}
        if "threads" in self.dims:
            params["threads"] = config.threads
        if self.workload.mode == "decode":
            return params
        params.update(family=config.family,
                      heads_per_band=config.heads_per_band or self.workload.NH,
                      t_inner=config.t_inner, precision=config.precision)
        if config.family == "chunkwise":
            params["chunk_size"] = config.chunk_size
        return params

    def distributions(self) -> dict[str, tuple[Any, ...]]:
        """Optuna's categorical choices: ``dims`` plus the default's values (so it can be enqueued)."""
        dp = self.params_of(self.default)
        out = {}
        for name, choices in self.dims.items():
            extra = (dp[name],) if name in dp and dp[name] not in choices else ()
            out[name] = tuple(choices) + extra
        return out

    def suggest(self, trial: Any) -> KernelConfig:
        """Draw a config with an Optuna trial (define-by-run: chunk_size only for chunkwise)."""
        d = self.distributions()
        params: dict[str, Any] = {"compile_mode": trial.suggest_categorical("compile_mode", d["compile_mode"])}
        if "threads" in d:
            params["threads"] = trial.suggest_categorical("threads", d["threads"])
        if self.workload.mode == "prefill":
            params["family"] = trial.suggest_categorical("family", d["family"])
            if params["family"] == "chunkwise":
                params["chunk_size"] = trial.suggest_categorical("chunk_size", d["chunk_size"])
            params["heads_per_band"] = trial.suggest_categorical("heads_per_band", d["heads_per_band"])
            params["t_inner"] = trial.suggest_categorical("t_inner", d["t_inner"])
            params["precision"] = trial.suggest_categorical("precision", d["precision"])
        return self.config_from_params(params)

    def seeds(self) -> list[KernelConfig]:
        """Configs a sampled (TPE) study tries right after the default: the default's bands with the
        sequence in as few compiled blocks as the unroll ladder allows, at the default's chunk size and
        at twice it. One call instead of several won every prefill we measured (CPU and GPU)."""
        if self.workload.mode == "decode" or self.default.family != "chunkwise":
            return []
        d = self.distributions()
        out: list[KernelConfig] = []
        seen = {effective_key(self.default, self.workload)}
        for L in (self.default.chunk_size, 2 * self.default.chunk_size):
            if L not in d["chunk_size"]:
                continue
            fits = [t for t in sorted(d["t_inner"]) if t * L >= self.workload.S]
            cfg = self.default.replace(chunk_size=L, t_inner=fits[0] if fits else max(d["t_inner"]))
            key = effective_key(cfg, self.workload)
            if key not in seen:
                seen.add(key)
                out.append(cfg)
        return out

    def candidates(self) -> list[KernelConfig]:
        """Every distinct (by effective kernel) valid config of the space, the default first."""
        out: dict[str, KernelConfig] = {effective_key(self.default, self.workload): self.default}
        thr = (self.default.threads, *self.dims.get("threads", ()))  # the default's count and the dimension's
        if self.workload.mode == "decode":
            for mode, n in itertools.product(self.dims["compile_mode"], thr):
                cfg = self.default.replace(compile_mode=mode, threads=n)
                out.setdefault(effective_key(cfg, self.workload), cfg)
            return list(out.values())
        d = self.dims
        for fam, mode, prec, hpb, t, n in itertools.product(
                d["family"], d["compile_mode"], d["precision"], d["heads_per_band"], d["t_inner"], thr):
            for cs in (d["chunk_size"] if fam == "chunkwise" else (RECURRENT_TILE,)):
                cfg = self.config_from_params(dict(family=fam, chunk_size=cs, heads_per_band=hpb,
                                                   t_inner=t, compile_mode=mode, precision=prec, threads=n))
                out.setdefault(effective_key(cfg, self.workload), cfg)
        return list(out.values())

    def signature(self) -> str:
        """Short hash of the space (part of the study name: a changed space is a new study)."""
        blob = json.dumps({"dims": self.dims, "default": self.default.to_dict()}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]
