"""One device call for the warp-specialised Hopper kernels: check the forward (default and
variant configs) and the backward kernels against the float64 reference on awkward shapes (each
set in a subprocess with a time limit, so a deadlock costs seconds), then time them next to the
portable kernels, SDPA-FA2 and cuDNN and print tables.

``PYTHONPATH=. python3 benchmarks/scripts/attention_ws_device.py [--check-only] [--variants]
[--bwd | --bwd-only] [--pytest]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.getcwd())
from tessera.bench.common import try_bench  # noqa: E402
from tessera.bench.suites.attention import attention_flops, make_inputs, peer_backends, sdpa_fns  # noqa: E402
from tessera.kernels.attention import hopper_ws as ws  # noqa: E402
from tessera.kernels.attention import hopper_ws_bwd as wsb  # noqa: E402
from tessera.kernels.attention.configs import bwd_configs, fwd_config  # noqa: E402
from tessera.kernels.attention.launch import Problem, default_scale, run_backward, run_forward  # noqa: E402
from tessera.ops.attention_reference import attention_reference  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/ws_out")
# Checked and timed besides the defaults: overrides of hopper_ws.config by head dim.
VARIANTS = {
    "default": {},
    "one_tile_per_program": {D: dict(PERSISTENT=False) for D in (64, 128, 256)},
    "d64_two_consumers": {64: dict(CONSUMERS=2)},
}
# (B, H, Hkv, Sq, Sk, D, causal, layout)
CHECKS = [
    (2, 3, 3, 1000, 1000, 128, False, "bhsd"),
    (2, 3, 3, 1000, 1000, 128, True, "bhsd"),
    (1, 4, 2, 4097, 4097, 128, True, "bhsd"),
    (2, 4, 4, 1000, 1000, 64, False, "bshd"),
    (1, 4, 1, 1000, 1000, 64, True, "bhsd"),
    (3, 2, 1, 17, 33, 128, True, "bhsd"),
    (2, 2, 2, 300, 1000, 64, True, "bhsd"),
    (2, 2, 2, 1000, 300, 128, True, "bhsd"),
    (2, 2, 2, 1, 1, 64, False, "bhsd"),
    (1, 2, 2, 256, 128, 128, False, "bhsd"),
    (2, 3, 3, 1000, 1000, 256, True, "bhsd"),
    (1, 4, 2, 300, 1000, 256, False, "bshd"),
]


def inputs(B, H, Hkv, Sq, Sk, D, layout, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(Sq * 7 + Sk + D)

    def t(h, S):
        if layout == "bshd":
            return torch.randn(B, S, h, D, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
        return torch.randn(B, h, S, D, device="cuda", dtype=dtype, generator=g)

    return t(H, Sq), t(Hkv, Sk), t(Hkv, Sk)


def ws_call(q, k, v, causal, **overrides):
    B, H, Sq, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=q.device)
    return ws.run_forward_ws(q, k, v, o, lse, H, k.shape[1], Sq, k.shape[2], default_scale(D, None), causal,
                             **overrides)


def run_cases(cases, check):
    """``check(case, q, k, v)`` -> (ok, errors) for every case; one JSON line each, flushed (a
    hang shows where)."""
    ok_all = True
    for case in cases:
        B, H, Hkv, Sq, Sk, D, causal, layout = case
        ok, errs = check(case, *inputs(B, H, Hkv, Sq, Sk, D, layout))
        ok_all &= ok
        print(json.dumps({"case": case, **errs, "ok": ok}), flush=True)
    return ok_all


def check_cases(variant):
    """The forward of one variant against float64 attention."""
    def check(case, q, k, v):
        D, causal = case[5], case[6]
        o, lse = ws_call(q, k, v, causal, **VARIANTS[variant].get(D, {}))
        torch.cuda.synchronize()
        ro, rlse = attention_reference(q.double(), k.double(), v.double(), causal=causal)
        err = ((o.double() - ro).abs().max() / ro.abs().max().clamp_min(1e-6)).item()
        fin = torch.isfinite(rlse)
        lerr = (lse.double()[fin] - rlse[fin]).abs().max().item() if fin.any() else 0.0
        bad_inf = (torch.isfinite(lse) != fin).sum().item()
        ok = err < 2e-2 and lerr < 1e-2 and bad_inf == 0 and torch.isfinite(o).all().item()
        return ok, {"o_err": round(err, 5), "lse_err": lerr}

    return run_cases([c for c in CHECKS if variant == "default" or c[5] in VARIANTS[variant]], check)


BWD_CHECKS = CHECKS[:9] + CHECKS[10:]  # d256: the dQ kernel only


def rel(got, want):
    if want.norm() < 1e-9:  # e.g. softmax over a single key: the exact gradient is 0
        return got.double().abs().max().item()
    return ((got.double() - want).norm() / want.norm()).item()


def check_bwd_cases():
    """dK, dV of the warp-specialised kernel against float64 autograd of the reference."""
    def check(case, q, k, v):
        B, H, Hkv, Sq, Sk, D, causal, _ = case
        prob = Problem(B, H, Hkv, Sq, Sk, D, causal, default_scale(D, None))
        o, lse = run_forward(q, k, v, None, prob)
        do = torch.randn_like(o)
        delta = (o.float() * do.float()).sum(-1).contiguous()
        dk, dv, dq = torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(q)
        dkdv = D in wsb.CONFIGS
        fused = {}
        if dkdv:
            wsb.run_dkdv_ws(q, k, v, do, dk, dv, lse, delta, H, Hkv, Sq, Sk, prob.scale, causal, FUSE_DQ=False)
            fk, fv, fq = torch.zeros_like(k), torch.zeros_like(v), torch.zeros_like(q)
            wsb.run_dkdv_ws(q, k, v, do, fk, fv, lse, delta, H, Hkv, Sq, Sk, prob.scale, causal, dq=fq, FUSE_DQ=True)
            fused = {"fused_dk": fk, "fused_dv": fv, "fused_dq": fq}
        if D in wsb.DQ_CONFIGS:
            wsb.run_dq_ws(q, k, v, do, dq, lse, delta, H, Hkv, Sq, Sk, prob.scale, causal)
        torch.cuda.synchronize()
        qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
        ro, _ = attention_reference(qd, kd, vd, causal=causal)
        ro.backward(do.double())
        ek, ev = (rel(dk, kd.grad), rel(dv, vd.grad)) if dkdv else (0.0, 0.0)
        eq = rel(dq, qd.grad) if D in wsb.DQ_CONFIGS else 0.0
        errs = {"dk_err": round(ek, 5), "dv_err": round(ev, 5), "dq_err": round(eq, 5)}
        ref = {"fused_dk": kd.grad, "fused_dv": vd.grad, "fused_dq": qd.grad}
        errs.update({n + "_err": round(rel(t, ref[n]), 5) for n, t in fused.items()})
        ok = all(e < 1e-2 for e in errs.values()) and all(bool(torch.isfinite(t).all())
                                                            for t in (dk, dv, dq, *fused.values()))
        return ok, errs

    return run_cases(BWD_CHECKS, check)


DIMS_BWD = [int(d) for d in os.environ.get("WS_BWD_DIMS", "128,64").split(",")]


def timing_bwd():
    """Backward-only TFLOP/s: delta + warp-specialised dK/dV + dQ, and the dK/dV kernel computing
    dQ too, against the portable kernels (d64 included below the forward's 2048-key threshold)."""
    ws.MIN_KEYS.clear()
    rows = []
    for D in DIMS_BWD:
        for S in (1024, 4096, 16384):
            for causal in (False, True):
                H = 2048 // D
                B = max(1, 32768 // S)
                q, k, v = make_inputs(B, H, H, S, D)
                prob = Problem(B, H, H, S, S, D, causal, default_scale(D, None))
                o, lse = run_forward(q, k, v, None, prob)
                do = torch.randn_like(o)
                delta = (o.float() * do.float()).sum(-1).contiguous()
                dk, dv, dq = torch.empty_like(k), torch.empty_like(v), torch.empty_like(q)
                fl = attention_flops(B, H, S, S, D, causal) * 2.5
                assert wsb.supported_dq(q, k, v, do, dq)
                def backward(fuse):
                    def go():
                        default = wsb.CONFIGS[D]
                        wsb.CONFIGS[D] = dict(default, FUSE_DQ=fuse)
                        try:
                            return run_backward(do, q, k, v, o, lse, None, prob)
                        finally:
                            wsb.CONFIGS[D] = default
                    return go

                res = {"bwd_ws": try_bench(backward(False)) if D in wsb.CONFIGS else
                       try_bench(lambda: run_backward(do, q, k, v, o, lse, None, prob)),
                       "bwd_fused": try_bench(backward(True)) if D in wsb.CONFIGS else None,
                       "bwd_portable": try_bench(lambda: run_backward(do, q, k, v, o, lse, None, prob,
                                                                      configs=bwd_configs(D, causal))),
                       "dkdv_ws": try_bench(lambda: wsb.run_dkdv_ws(q, k, v, do, dk, dv, lse, delta, H, H, S, S,
                                                                    prob.scale, causal, FUSE_DQ=False))
                       if D in wsb.CONFIGS else None,
                       "dq_ws": try_bench(lambda: wsb.run_dq_ws(q, k, v, do, dq, lse, delta, H, H, S, S, prob.scale,
                                                                causal)),
                       "dq_ws_bn64": try_bench(lambda: wsb.run_dq_ws(q, k, v, do, dq, lse, delta, H, H, S, S,
                                                                     prob.scale, causal, BLOCK_N=64, STAGES=1))
                       if D == 256 else None}
                tf = {n: (fl / (ms * 1e-3) / 1e12 if ms else None) for n, ms in res.items()}
                rows.append((f"bwd d{D} S{S} {'causal' if causal else 'full'}", tf))
    print("\n| workload (backward TFLOP/s) | delta+dK/dV+dQ (ws) | dK/dV computing dQ (TMA adds) | fused/ws | portable backward | ws/portable | ws dK/dV alone | ws dQ alone | ws dQ d256 BN64 1 stage (bwd FLOPs) |")
    for wl, tf in rows:
        def r(a, b):
            return "-" if not (tf[a] and tf[b]) else f"{tf[a] / tf[b]:.2f}"
        f = lambda x: "-" if x is None else f"{x:.1f}"
        print(f"| {wl} | {f(tf['bwd_ws'])} | {f(tf['bwd_fused'])} | {r('bwd_fused', 'bwd_ws')} | {f(tf['bwd_portable'])} | "
              f"{r('bwd_ws', 'bwd_portable')} | {f(tf['dkdv_ws'])} | {f(tf['dq_ws'])} | {f(tf['dq_ws_bn64'])} |")
    return rows


def checks():
    """{variant: passed}, each variant's cases in a subprocess of its own (run in parallel)."""
    procs = {v: subprocess.Popen([sys.executable, __file__, "--cases", v], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for v in list(VARIANTS) + ["bwd"]}
    results = {}
    for v, pr in procs.items():
        try:
            out, err = pr.communicate(timeout=240)
            bad = [ln for ln in out.splitlines() if '"ok": false' in ln]
            print(f"checks {v}: rc={pr.returncode} {len(out.splitlines())} cases " + "\n".join(bad))
            if pr.returncode:
                print(err[-1500:])
            results[v] = pr.returncode == 0
        except subprocess.TimeoutExpired:
            pr.kill()
            out, _ = pr.communicate()
            print(f"checks {v}: TIMEOUT (deadlock?) after {len(out.splitlines())} cases")
            results[v] = False
    return results


def timing(variants):
    rows = []
    peers = peer_backends()
    for D in (128, 64, 256):
        for S in (1024, 4096, 16384):
            for causal in (False, True):
                H = 2048 // D
                B = max(1, 32768 // S)
                q, k, v = make_inputs(B, H, H, S, D)
                fl = attention_flops(B, H, S, S, D, causal)
                prob = Problem(B, H, H, S, S, D, causal, default_scale(D, None))
                res = {"ws": try_bench(lambda: ws_call(q, k, v, causal)),
                       "portable": try_bench(lambda: run_forward(q, k, v, None, prob, config=fwd_config(D, causal)))}
                for name in variants:
                    if D in VARIANTS[name]:
                        res[name] = try_bench(lambda: ws_call(q, k, v, causal, **VARIANTS[name][D]))
                for name, be in peers.items():
                    res[name] = try_bench(sdpa_fns(q, k, v, causal, be)[0])
                tf = {n: (fl / (ms * 1e-3) / 1e12 if ms else None) for n, ms in res.items()}
                rows.append((f"fwd d{D} S{S} {'causal' if causal else 'full'}", tf))
                print(rows[-1], flush=True)
    names = list(dict.fromkeys(n for _, tf in rows for n in tf))
    print("\n| workload | " + " | ".join(names) + " | ws/cuDNN | ws/FA2 | ws/portable |")
    for wl, tf in rows:
        def f(x):
            return "-" if x is None else f"{x:.1f}"
        r = lambda a, b: "-" if not (tf.get(a) and tf.get(b)) else f"{tf[a] / tf[b]:.2f}"
        print(f"| {wl} | " + " | ".join(f(tf.get(n)) for n in names) +
              f" | {r('ws', 'cudnn')} | {r('ws', 'sdpa_flash')} | {r('ws', 'portable')} |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ws_timing.json"), "w") as fh:
        json.dump(rows, fh)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", help="run the checks of one variant in this process")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--pytest", action="store_true", help="run the attention GPU test file after the checks")
    ap.add_argument("--bwd", action="store_true", help="time the backward too")
    ap.add_argument("--bwd-only", action="store_true", help="time only the backward")
    a = ap.parse_args()
    if a.cases is not None:
        sys.exit(0 if (check_bwd_cases() if a.cases == "bwd" else check_cases(a.cases)) else 1)
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    ok = checks()
    print("CHECKS", ok, flush=True)
    if a.check_only or not ok["default"]:
        return
    if ok["bwd"] and (a.bwd or a.bwd_only):
        timing_bwd()
    if not a.bwd_only:
        timing([v for v in VARIANTS if v != "default" and ok[v]] if a.variants else [])
    if a.pytest:
        from benchmarks.scripts.attention_device import run_gpu_tests

        run_gpu_tests()


if __name__ == "__main__":
    main()
