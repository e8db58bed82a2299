"""Compile the warp-specialised Hopper attention forward for sm_90 without a GPU and print its
registers, spills, shared memory and the main loop's instruction mix
(``python benchmarks/scripts/attention_ws_compile.py [--sass]``)."""
from __future__ import annotations

import argparse
import re
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource
from triton.runtime.jit import mangle_type

sys.path.insert(0, ".")
from benchmarks.scripts.attention_compile import _resource_usage  # noqa: E402
from tessera.kernels.attention import hopper_ws as ws  # noqa: E402


def compile_ws(D: int, causal: bool, dtype=torch.bfloat16, block_n=None, stages=None):
    BN, STAGES = ws.CONFIGS[D]
    BN, STAGES = block_n or BN, stages or STAGES
    q = torch.empty(2, 4, 256, D, dtype=dtype)
    args = {"q_desc": ws.descriptor(q, 64), "k_desc": ws.descriptor(q, BN), "v_desc": ws.descriptor(q, BN),
            "o_desc": ws.descriptor(q, 64)}
    fn = ws._fwd_ws_kernel
    sig, consts, attrs = {}, {"HEAD_DIM": D, "BLOCK_N": BN, "STAGES": STAGES, "CAUSAL": causal}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
        elif name in args:
            sig[name] = mangle_type(args[name])
        elif name == "LSE":
            sig[name] = "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name == "qk_scale":
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    src = GluonASTSource(fn, sig, consts, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "maxnreg": 168})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--variants", action="store_true")
    a = ap.parse_args()
    variants = [(D, c, None, None) for D in (64, 128) for c in (False, True)]
    if a.variants:
        variants += [(128, False, 128, 3), (128, False, 64, 4), (64, False, 128, 2), (64, False, 64, 4)]
    for D, causal, bn, st in variants:
        if True:
            k = compile_ws(D, causal, block_n=bn, stages=st)
            regs, spills = _resource_usage(k.asm["cubin"])
            ptx = k.asm["ptx"]
            nreg = sorted(set(re.findall(r"setmaxnreg\.(\w+)\.sync\.aligned\.u32\s+(\d+)", ptx)))
            print(f"D{D} causal={causal} BN{bn} S{st}: regs {regs} stack {spills} smem {k.metadata.shared} setmaxnreg {nreg} "
                  f"bar.sync {len(re.findall(r'bar.sync|barrier.sync', ptx))} ld.shared {ptx.count('ld.shared')} "
                  f"st.shared {ptx.count('st.shared')} wgmma {ptx.count('wgmma.mma_async')}")
            if a.sass:
                open(f"/tmp/ws_D{D}_{int(causal)}.ptx", "w").write(ptx)


if __name__ == "__main__":
    main()
