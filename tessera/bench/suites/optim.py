"""Suite ``optim``: one AdamW step over a ~1.1B-parameter model (201 tensors, Llama-style shapes) against
torch.optim.AdamW(fused=True) and foreach=True, in the same run. TB/s counts the bytes each step must move.

Two settings: bf16 parameters with bf16 state (14 bytes a parameter for everyone), and bf16 parameters with
fp32 master weights and fp32 state (Tessera: one kernel, 28 bytes; torch: grads cast to fp32, fused AdamW on
the fp32 masters, masters copied back to bf16).

Example:
    python -m tessera.bench optim --quick
"""
from __future__ import annotations

from typing import List

from ..common import Row, tbps, try_bench


def model_shapes(layers: int = 22, d: int = 2048, ffn: int = 5632, vocab: int = 32000):
    """Parameter shapes of a Llama-style decoder (22 layers: 201 tensors, about 1.1B parameters)."""
    shapes = [(vocab, d)]
    for _ in range(layers):
        shapes += [(d,), (d, d), (d, d), (d, d), (d, d), (d,), (d, ffn), (d, ffn), (ffn, d)]
    shapes += [(d,), (d, vocab)]
    return shapes


def _tensors(shapes, dtype, seed):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(s, device="cuda", dtype=torch.float32, generator=g).mul_(0.02).to(dtype) for s in shapes]


def _time_tessera(shapes, grads, **kw):
    import torch

    from ... import optim as ts_optim

    params = _tensors(shapes, torch.bfloat16, 0)
    opt = ts_optim.AdamW(params, lr=1e-4, weight_decay=0.1, **kw)
    return try_bench(lambda: opt.step(grads))


def _time_torch(shapes, grads, master: bool, **kw):
    """torch.optim.AdamW on bf16 params, or (``master``) on fp32 copies with the casts a training loop needs."""
    import torch

    params = _tensors(shapes, torch.bfloat16, 0)
    if not master:
        for p, g in zip(params, grads):
            p.grad = g
        topt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, **kw)
        return try_bench(topt.step)
    masters = [p.float() for p in params]
    mgrads = [torch.empty_like(m) for m in masters]
    for m, g in zip(masters, mgrads):
        m.grad = g
    topt = torch.optim.AdamW(masters, lr=1e-4, weight_decay=0.1, **kw)

    def step():
        torch._foreach_copy_(mgrads, grads)
        topt.step()
        torch._foreach_copy_(params, masters)

    return try_bench(step)


def _row(shapes, master: bool) -> Row:
    import torch

    n = sum(int(torch.Size(s).numel()) for s in shapes)
    grads = _tensors(shapes, torch.bfloat16, 1)
    ms = {"tessera": _time_tessera(shapes, grads, master_weights=master)}
    torch.cuda.empty_cache()
    for name, kw in (("torch fused", dict(fused=True)), ("torch foreach", dict(foreach=True))):
        ms[name] = _time_torch(shapes, grads, master, **kw)
        torch.cuda.empty_cache()
    nbytes = (28.0 if master else 14.0) * n
    what = "bf16+fp32 master" if master else "bf16 params+state"
    note = "28 B/param counted (torch moves 40)" if master else "14 B/param for all"
    return Row("optim", f"adamw {what} {n / 1e9:.2f}B/{len(shapes)}t", "TB/s", tbps(nbytes, ms["tessera"]),
               {k: tbps(nbytes, v) for k, v in ms.items() if k != "tessera"}, note)


def bench_bf16_state(shapes) -> Row:
    """bf16 parameters, gradients and moments: the same 14 bytes a parameter for Tessera and torch."""
    return _row(shapes, master=False)


def bench_master_weights(shapes) -> Row:
    """bf16 parameters with fp32 master weights and fp32 moments."""
    return _row(shapes, master=True)


def run(args) -> List[Row]:
    """AdamW rows (``--quick``: a 4-layer model)."""
    shapes = model_shapes(layers=4) if args.quick else model_shapes()
    return [bench_bf16_state(shapes), bench_master_weights(shapes)]
