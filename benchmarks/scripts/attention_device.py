"""One device call's worth of attention work: precompile in parallel, check correctness on
awkward shapes (bf16 vs the float64 reference), sweep block shapes, time the peers, and print
a short table last.  ``PYTHONPATH=. python3 benchmarks/scripts/attention_device.py --phase sweep``
(``--phase suite`` runs the benchmark suite instead; logs go to $OUT).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import torch

sys.path.insert(0, os.getcwd())
try:
    import tessera  # noqa: F401
except Exception:  # the package root may be mid-edit; the kernels need only its leaf modules
    import types

    _pkg = types.ModuleType("tessera")
    _pkg.__path__ = [os.path.join(os.getcwd(), "tessera")]
    sys.modules["tessera"] = _pkg
from tessera.bench.common import try_bench  # noqa: E402
from tessera.bench.suites.attention import attention_flops, make_inputs, peer_backends, sdpa_fns  # noqa: E402
from tessera.kernels.attention.configs import block_config  # noqa: E402
from tessera.kernels.attention.launch import Problem, run_backward, run_forward  # noqa: E402
from tessera.ops.attention_reference import attention_reference, varlen_reference  # noqa: E402

OUT = os.environ.get("OUT", "/tmp/attention_out")
T0 = time.time()
LOG = []


def log(msg):
    line = f"[{time.time() - T0:6.1f}s] {msg}"
    print(line, flush=True)
    LOG.append(line)


def cfg(t):
    return None if t is None else block_config(t)


# --- what to compile and time -------------------------------------------------------------------
# Entries are (TMA mode, (BM, BN, warps, stages[, maxnreg])); mode 1 = device-side descriptors, 2 = host-side.
# (The earlier sweeps' entries and results are recorded in benchmarks/results/attention.md.)
FWD_SWEEP = {}
BWD_SWEEP = {}  # (D, S, causal): [(TMA mode, dK/dV config, dQ config)]
# (name, B, H, Hkv, Sq, Sk, D, causal, mask, dropout, layout)
CHECKS = [
    ("d64 S1000 bshd", 2, 4, 4, 1000, 1000, 64, False, None, 0.0, "bshd"),
    ("d128 S4097 causal GQA", 1, 4, 2, 4097, 4097, 128, True, None, 0.0, "bhsd"),
    ("d96 S1000 causal", 1, 3, 3, 1000, 1000, 96, True, None, 0.0, "bhsd"),
    ("d256 S1000", 1, 2, 1, 1000, 1000, 256, False, None, 0.0, "bhsd"),
    ("d32 Sq17 Sk33 causal", 3, 2, 1, 17, 33, 32, True, None, 0.0, "bhsd"),
    ("d64 S1 ", 2, 2, 2, 1, 1, 64, False, None, 0.0, "bhsd"),
    ("d128 S1000 keypad", 2, 4, 4, 1000, 1000, 128, False, "pad", 0.0, "bhsd"),
    ("d64 S1000 additive causal", 1, 4, 2, 1000, 1000, 64, True, "add", 0.0, "bhsd"),
    ("d128 S1000 dropout causal", 1, 2, 2, 1000, 1000, 128, True, None, 0.1, "bhsd"),
    ("d128 Sq1000 Sk4097 causal", 1, 2, 2, 1000, 4097, 128, True, None, 0.0, "bhsd"),
]


def build_mask(kind, B, H, Sq, Sk, g):
    if kind == "pad":
        lengths = torch.randint(1, Sk + 1, (B,), generator=g, device="cuda")
        return (torch.arange(Sk, device="cuda")[None, :] < lengths[:, None]).view(B, 1, 1, Sk)
    if kind == "add":
        return torch.randn(1, H, Sq, Sk, device="cuda", generator=g)
    return None


def check_case(c, warm_only=False):
    name, B, H, Hkv, Sq, Sk, D, causal, mkind, p, layout = c
    g = torch.Generator(device="cuda").manual_seed(hash(name) % 2**31)

    def t(h, s):
        if layout == "bshd":
            return torch.randn(B, s, h, D, device="cuda", generator=g, dtype=torch.bfloat16).transpose(1, 2)
        return torch.randn(B, h, s, D, device="cuda", generator=g, dtype=torch.bfloat16)

    q, k, v = t(H, Sq), t(Hkv, Sk), t(Hkv, Sk)
    mask = build_mask(mkind, B, H, Sq, Sk, g)
    prob = Problem(B, H, Hkv, Sq, Sk, D, causal, D ** -0.5, p, 1234)
    o, lse = run_forward(q, k, v, mask, prob)
    do = torch.randn_like(o)
    dq, dk, dv = run_backward(do, q, k, v, o, lse, mask, prob)
    torch.cuda.synchronize()
    if warm_only:
        return None
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, rl = attention_reference(qd, kd, vd, None if mask is None else (mask if mask.dtype == torch.bool else mask.double()),
                                 causal=causal, dropout_p=p, seed=1234)
    ro.backward(do.double())

    def rel(a, b):
        if torch.isnan(a).any():
            return float("nan")
        if b.norm() < 1e-6:  # e.g. softmax over one key: the exact gradient is 0, report the largest entry
            return a.double().abs().max().item()
        return ((a.double() - b).norm() / b.norm()).item()

    fin = torch.isfinite(rl)
    lse_err = (lse.double()[fin] - rl[fin]).abs().max().item() if fin.any() else 0.0
    inf_ok = torch.equal(torch.isinf(lse), ~fin)
    return dict(o=rel(o, ro.detach()), dq=rel(dq, qd.grad), dk=rel(dk, kd.grad), dv=rel(dv, vd.grad), lse=lse_err,
                inf_ok=inf_ok)


def check_varlen(warm_only=False):
    lengths_q = [1, 17, 1000, 4097, 300]
    lengths_k = [5, 17, 1200, 4097, 100]
    cq = torch.tensor([0] + torch.tensor(lengths_q).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    ck = torch.tensor([0] + torch.tensor(lengths_k).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    H, Hkv, D = 4, 2, 128
    q = torch.randn(sum(lengths_q), H, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(sum(lengths_k), Hkv, D, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    prob = Problem(len(lengths_q), H, Hkv, max(lengths_q), max(lengths_k), D, True, D ** -0.5, varlen=True,
                   cu_q=cq, cu_k=ck)
    o, lse = run_forward(q, k, v, None, prob)
    do = torch.randn_like(o)
    dq, dk, dv = run_backward(do, q, k, v, o, lse, None, prob)
    torch.cuda.synchronize()
    if warm_only:
        return None
    qd, kd, vd = (x.double().requires_grad_() for x in (q, k, v))
    ro, rl = varlen_reference(qd, kd, vd, cq.cpu(), ck.cpu(), causal=True)
    ro.backward(do.double())
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    return dict(o=rel(o, ro.detach()), dq=rel(dq, qd.grad), dk=rel(dk, kd.grad), dv=rel(dv, vd.grad),
                inf_ok=torch.equal(torch.isinf(lse), torch.isinf(rl)))


def parse_fwd(c):
    """(config, TMA mode) of a forward sweep entry; None means the defaults."""
    if c is None:
        return None, None
    return cfg(c[1]), c[0]


def parse_bwd(c):
    if c is None:
        return None, None
    return (cfg(c[1]), cfg(c[2])), c[0]


SUITE_SHAPES = [(D, S, causal) for D in (64, 128, 256) for S in (1024, 4096, 16384) for causal in (False, True)]


def sweep_problem(D, S, causal):
    H = 2048 // D
    B = max(1, 32768 // S)
    return B, H


def warm_job(job):
    """Compile one variant in a worker by running it once with B=1 (same specialisation)."""
    kind = job[0]
    try:
        if kind == "check":
            check_case(job[1], warm_only=True)
        elif kind == "varlen":
            check_varlen(warm_only=True)
        elif kind in ("fwd", "bwd"):
            D, S, causal, c = job[1]
            B, H = sweep_problem(D, S, causal)
            q, k, v = make_inputs(1, H, H, S, D)
            prob = Problem(1, H, H, S, S, D, causal, D ** -0.5)
            if kind == "fwd":
                fc, tma = parse_fwd(c)
                run_forward(q, k, v, None, prob, config=fc, use_tma=tma)
            else:
                o, lse = run_forward(q, k, v, None, prob)
                bc, mode = parse_bwd(c)
                run_backward(torch.randn_like(o), q, k, v, o, lse, None, prob, configs=bc, use_tma=mode)
        torch.cuda.synchronize()
        return None
    except Exception as exc:
        return f"{job}: {type(exc).__name__}: {str(exc)[:300]}"


def precompile(jobs, workers=14):
    log(f"precompiling {len(jobs)} variants on {workers} processes")
    import multiprocessing as mp

    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
        for err in ex.map(warm_job, jobs):
            if err:
                log("  precompile error: " + err)
    log("precompile done")


def timed(records, table, phase, D, S, causal, label, flops, fn, **extra):
    """Time ``fn``; add a record and a table row; return (ms, TFLOP/s), both None if it failed."""
    ms = try_bench(fn)
    tf = ms and flops / ms / 1e9
    records.append(dict(D=D, S=S, causal=causal, ms=ms, tflops=tf, **extra))
    table.append((f"{phase} d{D} S{S} {'causal' if causal else 'full'}", label, tf))
    return ms, tf


def phase_sweep(budget_s, with_suite=False):
    jobs = [("check", c) for c in CHECKS] + [("varlen",)]
    jobs += [("fwd", (D, S, causal, c)) for (D, S, causal), cs in FWD_SWEEP.items() for c in cs]
    jobs += [("bwd", (D, S, causal, c)) for (D, S, causal), cs in BWD_SWEEP.items() for c in cs]
    if with_suite:
        jobs += [("bwd", (D, S, causal, None)) for D, S, causal in SUITE_SHAPES]
    precompile(jobs)
    results = {"checks": {}, "fwd": [], "bwd": [], "peers": []}
    for c in CHECKS:
        try:
            r = check_case(c)
        except Exception as exc:
            r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        results["checks"][c[0]] = r
        log(f"check {c[0]}: {r}")
    try:
        r = check_varlen()
    except Exception as exc:
        r = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    results["checks"]["varlen d128 causal GQA"] = r
    log(f"check varlen: {r}")
    table = []
    for (D, S, causal), cs in FWD_SWEEP.items():
        B, H = sweep_problem(D, S, causal)
        q, k, v = make_inputs(B, H, H, S, D)
        prob = Problem(B, H, H, S, S, D, causal, D ** -0.5)
        flops = attention_flops(B, H, S, S, D, causal)
        for c in cs:
            if time.time() - T0 > budget_s:
                log("time budget reached; skipping")
                break
            fc, tma = parse_fwd(c)
            ms, tf = timed(results["fwd"], table, "fwd", D, S, causal, str(c), flops,
                           lambda: run_forward(q, k, v, None, prob, config=fc, use_tma=tma), cfg=str(c))
            log(f"fwd d{D} S{S} causal={causal} {c}: {ms} ms {tf and round(tf, 1)} TFLOP/s")
        for name, be in peer_backends().items():
            timed(results["peers"], table, "fwd", D, S, causal, name, flops, sdpa_fns(q, k, v, causal, be)[0],
                  mode="fwd", peer=name)
        del q, k, v
    for (D, S, causal), cs in BWD_SWEEP.items():
        B, H = sweep_problem(D, S, causal)
        q, k, v = make_inputs(B, H, H, S, D)
        prob = Problem(B, H, H, S, S, D, causal, D ** -0.5)
        o, lse = run_forward(q, k, v, None, prob)
        do = torch.randn_like(o)
        flops_b = attention_flops(B, H, S, S, D, causal, backward=True) - attention_flops(B, H, S, S, D, causal)
        flops_fb = attention_flops(B, H, S, S, D, causal, backward=True)
        for c in cs:
            if time.time() - T0 > budget_s:
                log("time budget reached; skipping")
                break
            bc, mode = parse_bwd(c)
            ms, tf = timed(results["bwd"], table, "bwd", D, S, causal, str(c), flops_b,
                           lambda: run_backward(do, q, k, v, o, lse, None, prob, configs=bc, use_tma=mode), cfg=str(c))
            log(f"bwd d{D} S{S} causal={causal} {c}: {ms} ms {tf and round(tf, 1)} TFLOP/s (bwd only)")
        for name, be in peer_backends().items():
            timed(results["peers"], table, "fwd+bwd", D, S, causal, name, flops_fb, sdpa_fns(q, k, v, causal, be)[1],
                  mode="fwd+bwd", peer=name)
        del q, k, v, o, do
        torch.cuda.empty_cache()
    with open(os.path.join(OUT, "attention_sweep.json"), "w") as f:
        json.dump(results, f, indent=1)
    print("\n== checks (rel err vs float64; bf16 bound 1e-2)")
    for n, r in results["checks"].items():
        print(f"{n:28s} " + " ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    print("\n== timings (TFLOP/s; bwd rows count the backward alone, peers' fwd+bwd rows both)")
    for w, c, tf in table:
        print(f"{w:28s} {c:40s} {'-' if tf is None else f'{tf:.1f}'}")


FP8_SWEEP = {  # (D, S, causal): forward configs for e4m3 inputs, timed next to the bf16 kernel and cuDNN bf16
    (64, 4096, False): [(128, 128, 4, 2), (128, 128, 4, 3), (128, 64, 4, 4), (128, 64, 4, 3, 168)],
    (128, 4096, False): [(128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 4, 2)],
    (128, 16384, False): [(128, 64, 4, 3), (128, 64, 4, 4)],
    (128, 4096, True): [(128, 64, 4, 3), (128, 64, 4, 4), (128, 64, 4, 2)],
    (256, 4096, False): [(128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 8, 4)],
    (256, 16384, True): [(128, 128, 8, 2), (128, 128, 8, 3)],
}


def phase_fp8():
    """fp8 forward config sweep per shape (accuracy is the GPU tests' job: ``-k fp8``)."""
    from tessera.kernels.matmul import quantize_fp8

    def quantized(B, H, S, D):
        return [quantize_fp8(torch.randn(B, H, S, D, device="cuda")) for _ in range(3)]

    table = []
    for (D, S, causal), cs in FP8_SWEEP.items():
        B, H = sweep_problem(D, S, causal)
        (q8, sq), (k8, sk), (v8, sv) = quantized(B, H, S, D)
        v8t = v8.transpose(2, 3).contiguous().transpose(2, 3)  # sequence-contiguous: no copy per call
        flops = attention_flops(B, H, S, S, D, causal)
        prob = Problem(B, H, H, S, S, D, causal, D ** -0.5)
        descale = torch.stack([sq, sk, sv]).float()
        for c in cs:
            timed([], table, "fwd fp8", D, S, causal, str(c), flops,
                  lambda: run_forward(q8, k8, v8t, None, prob, config=cfg(c), descale=descale))
        timed([], table, "fwd fp8", D, S, causal, "default, V copied per call", flops,
              lambda: run_forward(q8, k8, v8, None, prob, descale=descale))
        q, k, v = (x.to(torch.bfloat16) * s.to(torch.bfloat16) for x, s in ((q8, sq), (k8, sk), (v8, sv)))
        timed([], table, "fwd fp8", D, S, causal, "bf16 Tessera", flops, lambda: run_forward(q, k, v, None, prob))
        for name, be in peer_backends().items():
            timed([], table, "fwd fp8", D, S, causal, f"bf16 {name}", flops, sdpa_fns(q, k, v, causal, be)[0])
        log("\n".join(f"{w:26s} {c:28s} {'-' if tf is None else f'{tf:.1f}'}" for w, c, tf in table[-len(cs) - 4:]))
    print("\n== fp8 forward (TFLOP/s)")
    for w, c, tf in table:
        print(f"{w:26s} {c:28s} {'-' if tf is None else f'{tf:.1f}'}")


def run_gpu_tests(procs=8):
    """The GPU test file, its test ids spread over several pytest processes (compilation is the cost)."""
    import subprocess

    path = "tests/kernels/test_attention_gpu.py"
    ids = [line.strip() for line in subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", path],
                                                   capture_output=True, text=True).stdout.splitlines() if "::" in line]
    log(f"pytest: {len(ids)} GPU tests on {procs} processes")
    groups = [ids[i::procs] for i in range(procs)]
    running = [subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *g],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for g in groups if g]
    summary = []
    for i, pr in enumerate(running):
        out, _ = pr.communicate()
        with open(os.path.join(OUT, "attention_pytest.txt"), "a") as f:  # one file: few files come back
            f.write(f"==== group {i}\n{out}\n")
        tail = [ln for ln in out.splitlines() if "passed" in ln or "failed" in ln or "error" in ln.lower()]
        summary.append(f"  group {i}: rc={pr.returncode} {tail[-1] if tail else out[-300:]}")
        if pr.returncode:
            summary.append("\n".join([ln for ln in out.splitlines() if ln.startswith(("FAILED", "ERROR", "E "))][:40]))
    log("pytest done\n" + "\n".join(summary))
    return summary


def phase_suite(quick):
    from tessera.bench.common import format_table, write_json
    from tessera.bench.suites import attention as suite

    rows = suite.run(argparse.Namespace(quick=quick))
    write_json(rows, os.path.join(OUT, "attention_suite.json"))
    print(format_table(rows))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["sweep", "suite", "both", "fp8"], default="sweep")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--pytest", action="store_true", help="run the GPU test file first (parallel processes)")
    ap.add_argument("--budget", type=float, default=360.0, help="stop timing new variants after this many seconds")
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    log(f"device {torch.cuda.get_device_name()} torch {torch.__version__}")
    try:
        tests = run_gpu_tests() if args.pytest else []
        if args.phase in ("sweep", "both"):
            phase_sweep(args.budget, with_suite=args.phase == "both")
        if args.phase in ("suite", "both"):
            phase_suite(args.quick)
        if args.phase == "fp8":
            phase_fp8()
        if tests:
            print("\n== GPU tests\n" + "\n".join(tests))
    finally:
        with open(os.path.join(OUT, "attention_log.txt"), "w") as f:
            f.write("\n".join(LOG))


if __name__ == "__main__":
    main()
