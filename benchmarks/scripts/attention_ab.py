"""Interleaved A/B of attention kernel settings in one device call: each setting overrides entries of
the warp-specialised kernels' tables, is checked against float64 on awkward shapes, and is then
timed in rounds that alternate the settings (single timings on the card drift by ±5%; the rounds
see the same drift). "default" is always the first setting.

A setting is ``{"fwd": {D: overrides}, "bwd": {D: overrides}, "fwd_min_keys": {D: keys}}``, where
the overrides update ``hopper_ws.CONFIGS[D]`` / ``hopper_ws_bwd.CONFIGS[D]`` and ``fwd_min_keys``
replaces ``hopper_ws.MIN_KEYS``. ``--mode bwd`` times the whole backward (delta, dK/dV, dQ) on the
forward's outputs, ``fwd`` the forward, ``fwdbwd`` both; cuDNN's forward (or forward+backward) is
timed beside them.

    PYTHONPATH=. python3 benchmarks/scripts/attention_ab.py --mode bwd \\
        --settings '{"bm128": {"bwd": {"64": {"BLOCK_M": 128, "STAGES": 2}}}}' \\
        --shapes 64:1024:0,64:4096:1 [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
import triton
from torch.nn.attention import SDPBackend

sys.path.insert(0, os.getcwd())
from tessera.bench.suites.attention import attention_flops, make_inputs, sdpa_fns  # noqa: E402
from tessera.kernels.attention import hopper_ws, hopper_ws_bwd  # noqa: E402
from tessera.kernels.attention.launch import Problem, default_scale, run_backward, run_forward  # noqa: E402
from tessera.ops.attention_reference import attention_reference  # noqa: E402

TABLES = {"fwd": hopper_ws.CONFIGS, "bwd": hopper_ws_bwd.CONFIGS}
SAVED = {name: {D: dict(c) for D, c in table.items()} for name, table in TABLES.items()}
SAVED_MIN_KEYS = dict(hopper_ws.MIN_KEYS)
# (B, H, Hkv, Sq, Sk, causal): GQA with ragged blocks and Sq != Sk, one query row, an odd length
CHECKS = [(2, 4, 2, 777, 1000, True), (2, 4, 2, 777, 1000, False), (1, 2, 2, 1, 300, True),
          (1, 3, 3, 4097, 4097, True)]


def use(setting: dict) -> None:
    """Restore the tables, then apply ``setting``'s overrides."""
    for name, table in TABLES.items():
        for D, cfg in SAVED[name].items():
            table[D] = dict(cfg, **{k: v for k, v in setting.get(name, {}).get(str(D), {}).items()})
    hopper_ws.MIN_KEYS.clear()
    hopper_ws.MIN_KEYS.update({int(D): n for D, n in setting.get("fwd_min_keys", SAVED_MIN_KEYS).items()})


def rel(got, want) -> float:
    return ((got.double() - want).norm() / want.norm()).item()


def check(settings: dict, dims) -> None:
    """Every setting against float64 autograd of the reference (relative error < 1e-2)."""
    g = torch.Generator(device="cuda").manual_seed(5)
    for D in dims:
        for B, H, Hkv, Sq, Sk, causal in CHECKS:
            q = torch.randn(B, H, Sq, D, device="cuda", generator=g, dtype=torch.bfloat16)
            k, v = (torch.randn(B, Hkv, Sk, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
            do = torch.randn_like(q)
            prob = Problem(B, H, Hkv, Sq, Sk, D, causal, default_scale(D, None))
            qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
            ro, _ = attention_reference(qd, kd, vd, causal=causal)
            ro.backward(do.double())
            for name, setting in settings.items():
                use(setting)
                o, lse = run_forward(q, k, v, None, prob)
                errs = [rel(o, ro.detach()), *map(rel, run_backward(do, q, k, v, o, lse, None, prob),
                                                  (qd.grad, kd.grad, vd.grad))]
                print(f"check d{D} {(B, H, Hkv, Sq, Sk, causal)} {name}: o, dq, dk, dv rel err "
                      f"{[round(e, 5) for e in errs]}", flush=True)
                assert all(e < 1e-2 for e in errs), (name, D, errs)
    use({})


def timed(mode: str, D: int, S: int, causal: bool, settings: dict, rounds: int) -> str:
    H, B = 2048 // D, max(1, 32768 // S)
    q, k, v = make_inputs(B, H, H, S, D)
    prob = Problem(B, H, H, S, S, D, causal, default_scale(D, None))
    do = torch.randn_like(q)
    o, lse = run_forward(q, k, v, None, prob)
    fwd_flops = attention_flops(B, H, S, S, D, causal)
    flops = {"fwd": fwd_flops, "bwd": fwd_flops * 2.5, "fwdbwd": fwd_flops * 3.5}[mode]

    def call():
        if mode == "bwd":
            return run_backward(do, q, k, v, o, lse, None, prob)
        out = run_forward(q, k, v, None, prob)
        return out if mode == "fwd" else run_backward(do, q, k, v, *out, None, prob)

    times = {name: [] for name in settings}
    peer = []
    which = {"fwd": 0, "fwdbwd": 1}.get(mode)  # sdpa_fns gives (forward, forward+backward)
    cudnn = sdpa_fns(q, k, v, causal, SDPBackend.CUDNN_ATTENTION)[which] if which is not None else None
    for _ in range(rounds):
        for name, setting in settings.items():
            use(setting)
            times[name].append(triton.testing.do_bench(call, warmup=50, rep=300))
        if cudnn:
            peer.append(triton.testing.do_bench(cudnn, warmup=50, rep=300))
    use({})
    base = statistics.median(times["default"])
    cells = [f"{name} {flops / statistics.median(t) / 1e9:.1f} ({base / statistics.median(t):.3f})"
             for name, t in times.items()]
    if peer:
        cells.append(f"cuDNN {flops / statistics.median(peer) / 1e9:.1f}")
    return f"| {mode} d{D} S{S} {'causal' if causal else 'full'} | " + " | ".join(cells) + " |"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("fwd", "bwd", "fwdbwd"), default="bwd")
    ap.add_argument("--settings", required=True, help='JSON: {"name": {"fwd"|"bwd": {"D": {...}}}, ...}')
    ap.add_argument("--shapes", default="128:4096:0,128:4096:1", help="D:S:causal, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-check", action="store_true")
    a = ap.parse_args()
    settings = {"default": {}, **json.loads(a.settings)}
    shapes = [(int(D), int(S), c == "1") for D, S, c in (x.split(":") for x in a.shapes.split(","))]
    if not a.no_check:
        check(settings, sorted({D for D, _, _ in shapes}))
    rows = [timed(a.mode, D, S, causal, settings, a.rounds) for D, S, causal in shapes]
    print(f"\n| workload | {' | '.join(settings)} (TFLOP/s, ratio to default) |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
