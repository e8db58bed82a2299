"""Compile the warp-specialised Hopper attention forward for sm_90 without a GPU and print its
registers, spills, shared memory and the main loop's instruction mix
(``python benchmarks/scripts/attention_ws_compile.py [--sass]``)."""
from __future__ import annotations

import argparse
import re
import sys

sys.path.insert(0, ".")
from benchmarks.scripts.attention_compile import _resource_usage  # noqa: E402
from tessera.kernels.attention import hopper_ws as ws  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--variants", action="store_true")
    a = ap.parse_args()
    variants = [(D, c, {}) for D in (64, 128, 256) for c in (False, True)]
    if a.variants:
        variants += [(64, False, dict(CONSUMERS=2)), (128, False, dict(STAGES=3))]
    for D, causal, over in variants:
        k = ws.compile_sm90(D, causal, **over)
        regs, spills = _resource_usage(k.asm["cubin"])
        ptx = k.asm["ptx"]
        nreg = sorted(set(re.findall(r"setmaxnreg\.(\w+)\.sync\.aligned\.u32\s+(\d+)", ptx)))
        print(f"D{D} causal={causal} {over}: regs {regs} stack {spills} "
              f"smem {k.metadata.shared} setmaxnreg {nreg} bar.sync {len(re.findall(r'bar.sync|barrier.sync', ptx))} "
              f"ld.shared {ptx.count('ld.shared')} st.shared {ptx.count('st.shared')} "
              f"wgmma {ptx.count('wgmma.mma_async')}")
        if a.sass:
            open(f"/tmp/ws_D{D}_{int(causal)}.ptx", "w").write(ptx)


if __name__ == "__main__":
    main()
