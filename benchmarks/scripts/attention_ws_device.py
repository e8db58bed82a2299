"""One device call for the warp-specialised Hopper forward: check it against the float64
reference on awkward shapes (each check in a subprocess with a time limit, so a deadlock costs
seconds), then time it next to the portable kernel, SDPA-FA2 and cuDNN and print a table.

``PYTHONPATH=. python3 benchmarks/scripts/attention_ws_device.py [--check-only] [--variants]``
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
from tessera.kernels.attention.launch import Problem, default_scale, run_forward  # noqa: E402
from tessera.kernels.attention.reference import attention_reference  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/ws_out")
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
]


def inputs(B, H, Hkv, Sq, Sk, D, layout, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(Sq * 7 + Sk + D)

    def t(h, S):
        if layout == "bshd":
            return torch.randn(B, S, h, D, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
        return torch.randn(B, h, S, D, device="cuda", dtype=dtype, generator=g)

    return t(H, Sq), t(Hkv, Sk), t(Hkv, Sk)


def ws_call(q, k, v, causal, block_n=None, stages=None):
    B, H, Sq, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=q.device)
    return ws.run_forward_ws(q, k, v, o, lse, H, k.shape[1], Sq, k.shape[2], default_scale(D, None), causal,
                             block_n=block_n, stages=stages)


def check_one(idx):
    B, H, Hkv, Sq, Sk, D, causal, layout = CHECKS[idx]
    q, k, v = inputs(B, H, Hkv, Sq, Sk, D, layout)
    assert ws.supported(q, k, v, D, False, False, False), "not supported"
    o, lse = ws_call(q, k, v, causal)
    torch.cuda.synchronize()
    ro, rlse = attention_reference(q.double(), k.double(), v.double(), causal=causal)
    err = ((o.double() - ro).abs().max() / ro.abs().max().clamp_min(1e-6)).item()
    fin = torch.isfinite(rlse)
    lerr = (lse.double()[fin] - rlse[fin]).abs().max().item() if fin.any() else 0.0
    bad_inf = (torch.isfinite(lse) != fin).sum().item()
    ok = err < 2e-2 and lerr < 1e-2 and bad_inf == 0 and torch.isfinite(o).all().item()
    print(json.dumps({"case": CHECKS[idx], "o_err": err, "lse_err": lerr, "lse_inf_mismatch": bad_inf, "ok": ok}))
    return ok


def checks():
    results = []
    for i in range(len(CHECKS)):
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, __file__, "--one", str(i)], capture_output=True, text=True,
                               timeout=90)
            line = (r.stdout.strip().splitlines() or ["{}"])[-1]
            ok = '"ok": true' in line
            print(f"check {i} {CHECKS[i]}: {'ok' if ok else 'FAIL'} {time.time() - t0:.1f}s {line[-120:]}")
            if not ok:
                print(r.stderr[-2000:])
            results.append(ok)
        except subprocess.TimeoutExpired:
            print(f"check {i} {CHECKS[i]}: TIMEOUT (deadlock?)")
            results.append(False)
            break
    return all(results)


def timing(variants):
    rows = []
    peers = peer_backends()
    for D in (128, 64):
        for S in (1024, 4096, 16384):
            for causal in (False, True):
                H = 2048 // D
                B = max(1, 32768 // S)
                q, k, v = make_inputs(B, H, H, S, D)
                fl = attention_flops(B, H, S, S, D, causal)
                prob = Problem(B, H, H, S, S, D, causal, default_scale(D, None))
                res = {"ws": try_bench(lambda: ws_call(q, k, v, causal)),
                       "portable": try_bench(lambda: run_forward(q, k, v, None, prob))}
                for bn, st in variants.get(D, []):
                    res[f"ws_bn{bn}_s{st}"] = try_bench(lambda: ws_call(q, k, v, causal, bn, st))
                for name, be in peers.items():
                    res[name] = try_bench(sdpa_fns(q, k, v, causal, be)[0])
                tf = {n: (fl / (ms * 1e-3) / 1e12 if ms else None) for n, ms in res.items()}
                rows.append((f"fwd d{D} S{S} {'causal' if causal else 'full'}", tf))
                print(rows[-1], flush=True)
    names = list(rows[0][1])
    print("\n| workload | " + " | ".join(names) + " | ws/cuDNN | ws/FA2 | ws/portable |")
    for wl, tf in rows:
        def f(x):
            return "-" if x is None else f"{x:.1f}"
        r = lambda a, b: "-" if not (tf.get(a) and tf.get(b)) else f"{tf[a] / tf[b]:.2f}"
        print(f"| {wl} | " + " | ".join(f(tf[n]) for n in names) +
              f" | {r('ws', 'cudnn')} | {r('ws', 'sdpa_flash')} | {r('ws', 'portable')} |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ws_timing.json"), "w") as fh:
        json.dump(rows, fh)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--variants", action="store_true")
    a = ap.parse_args()
    if a.one is not None:
        sys.exit(0 if check_one(a.one) else 1)
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    ok = checks()
    print("CHECKS", "PASSED" if ok else "FAILED", flush=True)
    if a.check_only or not ok:
        return
    timing({128: [(128, 3), (64, 4)], 64: [(128, 2), (64, 4)]} if a.variants else {})


if __name__ == "__main__":
    main()
