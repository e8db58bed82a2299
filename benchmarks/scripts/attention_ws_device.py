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
from tessera.kernels.attention.configs import fwd_config  # noqa: E402
from tessera.kernels.attention.launch import Problem, default_scale, run_forward  # noqa: E402
from tessera.kernels.attention.reference import attention_reference  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/ws_out")
PINGPONG = os.environ.get("WS_PINGPONG", "0") == "1"
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


def ws_call(q, k, v, causal, block_n=None, stages=None, pingpong=None):
    B, H, Sq, D = q.shape
    o = torch.empty_like(q)
    lse = torch.empty(B, H, Sq, dtype=torch.float32, device=q.device)
    return ws.run_forward_ws(q, k, v, o, lse, H, k.shape[1], Sq, k.shape[2], default_scale(D, None), causal,
                             block_n=block_n, stages=stages, pingpong=pingpong)


def check_cases(pingpong):
    """Every case against float64 attention; one JSON line each, flushed (a hang shows where)."""
    ok_all = True
    for case in CHECKS:
        B, H, Hkv, Sq, Sk, D, causal, layout = case
        q, k, v = inputs(B, H, Hkv, Sq, Sk, D, layout)
        assert ws.supported(q, k, v, q), "not supported"
        o, lse = ws_call(q, k, v, causal, pingpong=pingpong)
        torch.cuda.synchronize()
        ro, rlse = attention_reference(q.double(), k.double(), v.double(), causal=causal)
        err = ((o.double() - ro).abs().max() / ro.abs().max().clamp_min(1e-6)).item()
        fin = torch.isfinite(rlse)
        lerr = (lse.double()[fin] - rlse[fin]).abs().max().item() if fin.any() else 0.0
        bad_inf = (torch.isfinite(lse) != fin).sum().item()
        ok = err < 2e-2 and lerr < 1e-2 and bad_inf == 0 and torch.isfinite(o).all().item()
        ok_all &= ok
        print(json.dumps({"case": case, "o_err": round(err, 5), "lse_err": lerr, "ok": ok}), flush=True)
    return ok_all


def checks():
    results = []
    for pp in (False, True):
        t0 = time.time()
        try:
            r = subprocess.run([sys.executable, __file__, "--cases", str(int(pp))], capture_output=True, text=True,
                               timeout=240)
            print(f"checks pingpong={pp} rc={r.returncode} {time.time() - t0:.1f}s\n{r.stdout}")
            if r.returncode:
                print(r.stderr[-2000:])
            results.append(r.returncode == 0)
        except subprocess.TimeoutExpired as e:
            print(f"checks pingpong={pp}: TIMEOUT (deadlock?)\n{(e.stdout or b'').decode()}")
            results.append(False)
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
                for name, (bn, st, pp) in variants.items():
                    res[name] = try_bench(lambda: ws_call(q, k, v, causal, bn, st, pp))
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
        print(f"| {wl} | " + " | ".join(f(tf.get(n)) for n in names) +
              f" | {r('ws', 'cudnn')} | {r('ws', 'sdpa_flash')} | {r('ws', 'portable')} |")
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "ws_timing.json"), "w") as fh:
        json.dump(rows, fh)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, help="run the checks in this process with pingpong 0/1")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--variants", action="store_true")
    ap.add_argument("--pytest", action="store_true", help="run the attention GPU test file after the checks")
    a = ap.parse_args()
    if a.cases is not None:
        sys.exit(0 if check_cases(bool(a.cases)) else 1)
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    plain_ok, pingpong_ok = checks()
    print("CHECKS", plain_ok, pingpong_ok, flush=True)
    if a.check_only or not plain_ok:
        return
    timing({"pingpong": (None, None, True)} if a.variants and pingpong_ok else {})
    if a.pytest:
        from benchmarks.scripts.attention_device import run_gpu_tests

        run_gpu_tests()


if __name__ == "__main__":
    main()
