"""Compile the attention kernels for sm_90 without a GPU and print registers, spills and
shared memory per variant (``python benchmarks/scripts/attention_compile.py [--fast]``).

Works with whichever Triton is importable (3.6 on the GPU machines, newer here), so a
kernel that fails to build on the device's Triton is caught before device time is spent.
"""
from __future__ import annotations

import argparse
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, ".")
from tessera.kernels.attention import backward as bwd  # noqa: E402
from tessera.kernels.attention import forward as fwd  # noqa: E402
from tessera.kernels.attention.configs import BWD_DKDV, BWD_DQ, FWD  # noqa: E402

FLOAT_ARGS = {"qk_scale", "sm_scale", "dropout_p"}
INT64_ARGS = {"seed"}
TENSORS = {"Q", "K", "V", "O", "LSE", "MASK", "CU_Q", "CU_K", "DO", "DELTA", "DK", "DV", "DQ", "DESCALE"}


def _desc_names(fn):
    """Which tensor arguments are host descriptors (USE_TMA 2), with their block rows."""
    return {"_fwd_kernel": {"Q": "BLOCK_M", "K": "BLOCK_N", "V": "BLOCK_N", "O": "BLOCK_M"},
            "_dkdv_kernel": {"Q": "BLOCK_M", "DO": "BLOCK_M"},
            "_dq_kernel": {"K": "BLOCK_N", "V": "BLOCK_N"}}.get(fn.__name__, {})


def compile_kernel(fn, constexprs, num_warps, num_stages, dtype="bf16"):
    sig, attrs = {}, {}
    descs = _desc_names(fn) if constexprs.get("USE_TMA") == 2 else {}
    # Unit strides of the head dim are specialised to the constant 1 at launch, as Triton does.
    if "FP8" in fn.arg_names and "FP8" not in constexprs:
        constexprs = dict(constexprs, FP8=False)
    constexprs = dict(constexprs, **{n: 1 for n in fn.arg_names if n.startswith("s_") and n.endswith("d")})
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in descs:
            sig[name] = f"tensordesc<{dtype}[1,1,{constexprs[descs[name]]},{constexprs['D_PAD']}]>"
        elif name in TENSORS:
            ty = {"LSE": "fp32", "DELTA": "fp32", "DESCALE": "fp32", "CU_Q": "i32", "CU_K": "i32",
                  "MASK": "u8"}.get(name, dtype)
            sig[name] = "*" + ty
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in FLOAT_ARGS:
            sig[name] = "fp32"
        elif name in INT64_ARGS:
            sig[name] = "i64"
        else:
            sig[name] = "i32"
            if name.startswith("s_") and not name.endswith("d") and name not in ("s_mk", "s_mq", "s_mb", "s_mh"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs, attrs)
    k = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps, "num_stages": num_stages})
    regs, spills = _resource_usage(k.asm["cubin"])
    return regs, spills, k.metadata.shared, k


def _resource_usage(cubin: bytes):
    """(registers, spill bytes) read by cuobjdump from the cubin."""
    import os
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    regs = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return (int(regs.group(1)) if regs else None), (int(stack.group(1)) if stack else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast", action="store_true", help="only d128, no TMA-off variants")
    args = ap.parse_args()
    print("triton", triton.__version__)
    dims = [128] if args.fast else [64, 96, 128, 256]
    for D in dims:
        from tessera.kernels.attention.configs import pad_head_dim
        P = pad_head_dim(D)
        for causal in (False, True):
            for tma in ([2] if args.fast else [2, 1, 0]):
                base = dict(HEAD_DIM=D, D_PAD=P, CAUSAL=causal, MASK_KIND=0, DROPOUT=False, VARLEN=False, USE_TMA=tma)
                bm, bn, w, s = FWD[P]
                variants = [("fwd", fwd._fwd_kernel, dict(base, BLOCK_M=bm, BLOCK_N=bn), w, s)]
                bm, bn, w, s = BWD_DKDV[P]
                variants.append(("dkdv", bwd._dkdv_kernel, dict(base, BLOCK_M=bm, BLOCK_N=bn), w, s))
                bm, bn, w, s = BWD_DQ[P]
                variants.append(("dq", bwd._dq_kernel, dict(base, BLOCK_M=bm, BLOCK_N=bn), w, s))
                for name, fn, cx, w, s in variants:
                    try:
                        regs, spills, smem, _ = compile_kernel(fn, cx, w, s)
                        print(f"D{D} causal={causal} tma={tma} {name:5s} BM{cx['BLOCK_M']} BN{cx['BLOCK_N']} w{w} s{s}: "
                              f"regs {regs} spills {spills} smem {smem}", flush=True)
                    except Exception as exc:  # report and go on
                        print(f"D{D} causal={causal} tma={tma} {name}: FAILED {type(exc).__name__}: "
                              f"{str(exc).splitlines()[-1][:300] if str(exc) else ''}", flush=True)


if __name__ == "__main__":
    main()


def sweep(D=128, causal=True):
    """Registers and spills of candidate block shapes (TMA path)."""
    from tessera.kernels.attention.configs import pad_head_dim
    P = pad_head_dim(D)
    base = dict(HEAD_DIM=D, D_PAD=P, CAUSAL=causal, MASK_KIND=0, DROPOUT=False, VARLEN=False, USE_TMA=2)
    cands = {"dkdv": [(32, 128, 8, 2), (64, 64, 4, 2), (64, 64, 8, 2), (32, 64, 4, 2), (16, 128, 8, 2), (64, 128, 8, 1)],
             "dq": [(128, 64, 8, 2), (64, 64, 4, 2), (128, 32, 8, 2), (64, 128, 8, 2)],
             "fwd": [(128, 64, 4, 3), (128, 128, 4, 2), (128, 64, 8, 3), (64, 64, 4, 4), (128, 32, 4, 3)]}
    fns = {"dkdv": bwd._dkdv_kernel, "dq": bwd._dq_kernel, "fwd": fwd._fwd_kernel}
    for name, cs in cands.items():
        for bm, bn, w, s in cs:
            try:
                regs, spills, smem, _ = compile_kernel(fns[name], dict(base, BLOCK_M=bm, BLOCK_N=bn), w, s)
                print(f"sweep D{D} {name:5s} BM{bm} BN{bn} w{w} s{s}: regs {regs} spills {spills} smem {smem}", flush=True)
            except Exception as exc:
                print(f"sweep D{D} {name} BM{bm} BN{bn} w{w} s{s}: FAILED {str(exc).splitlines()[-1][:200]}", flush=True)
