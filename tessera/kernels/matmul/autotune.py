"""Autotuning with a persistent cache.

With ``TESSERA_AUTOTUNE=1`` the first call for a (arch, dtypes, layout, shape bucket, epilogue)
key times every candidate config (plus cuBLAS) and stores the fastest in a
:class:`~tessera.runtime.disk_cache.DiskCache` (versioned, checksummed, atomic; a corrupt entry
is re-tuned; a failed write is a warning, and the choice then lasts for the process). A config
that fails to compile or run counts as infinitely slow. Without it, the heuristic default is
used. Choices are memoised in-process either way.
"""
from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Callable, Dict, List

from ...runtime.disk_cache import DiskCache
from .configs import Config

_MEMO: Dict[tuple, Config] = {}
_KEYS: Dict[tuple, dict] = {}
LAST: list = [None, None]  # diagnostics: (config, key) of the latest choice, for benchmark reports
_CACHE = None


def autotune_enabled() -> bool:
    return os.environ.get("TESSERA_AUTOTUNE", "0").strip() not in ("", "0")


def _cache() -> DiskCache:
    global _CACHE
    if _CACHE is None:
        _CACHE = DiskCache("matmul-autotune")
    return _CACHE


def _timed(fn: Callable[[], object]) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median"))


def tune(key: dict, cands: List[Config], make_runner: Callable[[Config], Callable[[], object]],
         label: str) -> Config:
    """Time each candidate (runner built by ``make_runner``); store and return the fastest."""
    print(f"tessera: autotuning {label} over {len(cands)} configs ...", file=sys.stderr, flush=True)
    timings = []
    for cfg in cands:
        try:
            ms = _timed(make_runner(cfg))
        except Exception:  # compile failure, out of resources, unsupported: infinitely slow
            ms = math.inf
        timings.append((ms, cfg))
    finite = [t for t in timings if math.isfinite(t[0])]
    if not finite:
        raise RuntimeError(f"no matmul config ran for {label}")
    best_ms, best = min(finite, key=lambda t: t[0])
    record = {"config": best.to_json(), "ms": best_ms,
              "timings": [[ms if math.isfinite(ms) else None, c.to_json()] for ms, c in timings]}
    try:
        _cache().put(key, record)
    except OSError as exc:  # a read-only or full cache folder: the choice still holds for this process
        warnings.warn(f"tessera: could not store the tuned config for {label} in {_cache().dir} ({exc}); it is "
                      f"used for this process only; set TESSERA_CACHE_DIR to a writable folder", stacklevel=3)
    print(f"tessera: {label}: {best} at {best_ms * 1e3:.1f} us", file=sys.stderr, flush=True)
    return best


def choose(key, memo_key: tuple, default: Config, cands: Callable[[], List[Config]],
           make_runner: Callable[[Config], Callable[[], object]], label: str) -> Config:
    """The config for a problem: memo, else (tuning on) disk cache or a fresh tuning, else default.

    ``key`` is the disk-cache key, or a function making it (built only on a memo miss)."""
    cfg = _MEMO.get(memo_key)
    if cfg is not None:
        LAST[0] = cfg
        return cfg
    if callable(key):
        key = key()
    if not autotune_enabled():
        cfg = default
    else:
        hit = _cache().get(key)
        try:
            cfg = Config.from_json(hit["config"]) if hit is not None else None
        except (TypeError, KeyError, ValueError):
            cfg = None  # a malformed entry is re-tuned
        if cfg is None:
            cfg = tune(key, cands(), make_runner, label)
    _MEMO[memo_key] = cfg
    LAST[0], LAST[1] = cfg, key
    _KEYS[memo_key] = key
    return cfg


def cached_choice(key: dict):
    """The stored tuning record for ``key`` (or None): for reports."""
    return _cache().get(key)
