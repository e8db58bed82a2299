"""Benchmark suite ``attention``: Tessera's flash attention against torch SDPA's FlashAttention-2
and cuDNN backends, forward and forward+backward, in TFLOP/s (causal counts half the work).

FLOPs: forward 4·B·H·Sq·Sk·D, backward 2.5× that, halved when causal. Shapes keep
H·D = 2048 and B·S = 32k tokens, plus fp8 forward rows. ``python -m tessera.bench attention [--quick]``.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from ..common import Row, try_bench, tflops

SUITE = "attention"


def attention_flops(B, H, Sq, Sk, D, causal, backward=False) -> float:
    """FLOPs counted for one call: fwd 4·B·H·Sq·Sk·D, fwd+bwd 3.5× that, halved when causal."""
    f = 4.0 * B * H * Sq * Sk * D
    if backward:
        f *= 3.5
    return f / 2 if causal else f


def make_inputs(B, H, Hkv, S, D, dtype=None, layout="bhsd"):
    import torch

    dtype = dtype or torch.bfloat16
    g = torch.Generator(device="cuda").manual_seed(B * 1000 + S + D)

    def t(h):
        if layout == "bshd":
            return torch.randn(B, S, h, D, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
        return torch.randn(B, h, S, D, device="cuda", dtype=dtype, generator=g)

    return t(H), t(Hkv), t(Hkv)


def tessera_fns(q, k, v, causal, fwd_config=None, bwd_configs=None, use_tma=None):
    """(forward, forward+backward) closures for Tessera's kernels."""
    import torch

    from tessera.kernels.attention.launch import Problem, default_scale, run_backward, run_forward

    B, H, Sq, D = q.shape
    prob = Problem(B, H, k.shape[1], Sq, k.shape[2], D, causal, default_scale(D, None))
    do = torch.randn_like(q)

    def fwd():
        return run_forward(q, k, v, None, prob, config=fwd_config, use_tma=use_tma)

    def fwd_bwd():
        o, lse = run_forward(q, k, v, None, prob, config=fwd_config, use_tma=use_tma)
        return run_backward(do, q, k, v, o, lse, None, prob, configs=bwd_configs, use_tma=use_tma)

    return fwd, fwd_bwd


def sdpa_fns(q, k, v, causal, backend):
    """(forward, forward+backward) closures for torch SDPA pinned to one backend."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    gqa = q.shape[1] != k.shape[1]
    qg, kg, vg = (x.detach().clone().requires_grad_() for x in (q, k, v))
    do = torch.randn_like(q)

    def call(a, b, c):
        with sdpa_kernel(backend):
            if gqa:
                return F.scaled_dot_product_attention(a, b, c, is_causal=causal, enable_gqa=True)
            return F.scaled_dot_product_attention(a, b, c, is_causal=causal)

    def fwd():
        with torch.no_grad():
            return call(q, k, v)

    def fwd_bwd():
        o = call(qg, kg, vg)
        return torch.autograd.grad(o, (qg, kg, vg), do)

    return fwd, fwd_bwd


def peer_backends() -> Dict[str, object]:
    from torch.nn.attention import SDPBackend

    return {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}


def _row(workload, flops, ts_ms, peer_ms: Dict[str, Optional[float]], notes) -> Row:
    row = Row(SUITE, workload, "TFLOP/s", tflops(flops, ts_ms), {p: tflops(flops, m) for p, m in peer_ms.items()},
              notes=notes)
    print(row.progress_line(), flush=True)  # the whole suite takes minutes
    return row


def dense_rows(D, S, causal, B=None, H=None, Hkv=None, modes=("fwd", "fwd+bwd"), layout="bhsd") -> List[Row]:
    """Rows for one dense shape: Tessera, SDPA-flash and cuDNN timed back to back."""
    H = H or 2048 // D
    Hkv = Hkv or H
    B = B or max(1, 32768 // S)
    q, k, v = make_inputs(B, H, Hkv, S, D, layout=layout)
    ts = dict(zip(("fwd", "fwd+bwd"), tessera_fns(q, k, v, causal)))
    peers = {name: dict(zip(("fwd", "fwd+bwd"), sdpa_fns(q, k, v, causal, be))) for name, be in peer_backends().items()}
    rows = []
    for mode in modes:
        flops = attention_flops(B, H, S, S, D, causal, backward=(mode == "fwd+bwd"))
        t = try_bench(ts[mode])
        pm = {name: try_bench(fns[mode]) for name, fns in peers.items()}
        tag = "causal" if causal else "full"
        gqa = f" Hkv{Hkv}" if Hkv != H else ""
        rows.append(_row(f"{mode} d{D} S{S} {tag}{gqa}", flops, t, pm,
                         f"B{B} H{H}{gqa} bf16 {layout}; ms tessera={t and round(t, 3)}"))
    del q, k, v
    return rows


def varlen_rows(D=128, H=16, causal=True, lengths=None) -> List[Row]:
    """A packed batch of unequal sequences; peers run the same batch padded to the longest."""
    import torch

    from tessera.kernels.attention import flash_attention_varlen_bwd, flash_attention_varlen_fwd

    lengths = lengths or [4096, 3000, 1500, 777, 2048, 4000, 123, 2500]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
    T, L = sum(lengths), max(lengths)
    q, k, v = (torch.randn(T, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    do = torch.randn_like(q)

    def fwd():
        return flash_attention_varlen_fwd(q, k, v, cu, cu, L, L, causal=causal)

    def fwd_bwd():
        o, lse = flash_attention_varlen_fwd(q, k, v, cu, cu, L, L, causal=causal)
        return flash_attention_varlen_bwd(do, q, k, v, o, lse, cu, cu, L, L, causal=causal)

    qp, kp, vp = make_inputs(len(lengths), H, H, L, D)
    peers = {name: dict(zip(("fwd", "fwd+bwd"), sdpa_fns(qp, kp, vp, causal, be))) for name, be in peer_backends().items()}
    rows = []
    for mode, fn in (("fwd", fwd), ("fwd+bwd", fwd_bwd)):
        flops = sum(attention_flops(1, H, n, n, D, causal, backward=(mode == "fwd+bwd")) for n in lengths)
        t = try_bench(fn)
        pm = {name: try_bench(fns[mode]) for name, fns in peers.items()}
        rows.append(_row(f"{mode} varlen d{D} {len(lengths)} seqs", flops, t, pm,
                         f"H{H} causal={causal} T={T}; peers run padded to {L} (FLOPs counted on real tokens)"))
    return rows


def fp8_rows(D, S, causal) -> List[Row]:
    """fp8 (e4m3) forward; the peers run bf16 on the dequantised inputs (SDPA has no fp8 path)."""
    import torch

    from tessera.kernels.attention import flash_attention_fp8_fwd
    from tessera.kernels.matmul import quantize_fp8

    H, B = 2048 // D, max(1, 32768 // S)
    (q8, sq), (k8, sk), (v8, sv) = (quantize_fp8(torch.randn(B, H, S, D, device="cuda")) for _ in range(3))
    q, k, v = (x.to(torch.bfloat16) * s.to(torch.bfloat16) for x, s in ((q8, sq), (k8, sk), (v8, sv)))
    v8 = v8.transpose(2, 3).contiguous().transpose(2, 3)  # V kept sequence-contiguous, as the kernel reads it
    flops = attention_flops(B, H, S, S, D, causal)
    t = try_bench(lambda: flash_attention_fp8_fwd(q8, k8, v8, sq, sk, sv, causal=causal))
    pm = {name: try_bench(sdpa_fns(q, k, v, causal, be)[0]) for name, be in peer_backends().items()}
    tag = "causal" if causal else "full"
    return [_row(f"fwd fp8 d{D} S{S} {tag}", flops, t, pm, f"B{B} H{H} e4m3 (peers bf16); ms tessera={t and round(t, 3)}")]


def run(args) -> List[Row]:
    import torch

    if not torch.cuda.is_available():
        print("attention suite: no CUDA device, nothing to time")
        return []
    rows: List[Row] = []
    quick = bool(getattr(args, "quick", False))
    dims = [64, 128, 256]
    seqs = [4096] if quick else [1024, 4096, 16384]
    for D in dims:
        for S in seqs:
            for causal in (False, True):
                if quick and D != 128 and causal:
                    continue
                rows += dense_rows(D, S, causal)
                torch.cuda.empty_cache()
    rows += dense_rows(128, 4096, True, B=4, H=32, Hkv=8)
    rows += dense_rows(128, 4096, False, layout="bshd", modes=("fwd",))
    rows += varlen_rows()
    if torch.cuda.get_device_capability() >= (9, 0):
        for D, S, causal in [(128, 4096, False), (128, 16384, False), (128, 4096, True), (64, 4096, False),
                             (256, 4096, False)]:
            rows += fp8_rows(D, S, causal)
    return rows
