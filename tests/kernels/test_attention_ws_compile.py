"""The warp-specialised Hopper attention forward, compiled for sm_90 on the CPU: the partitions
get their register budgets, the score product of the next key block overlaps the softmax, and
the probabilities reach the second product through registers, not shared memory."""
import json
import re

import pytest
import torch

from tessera.kernels.attention import gluon_hopper, hopper_ws

pytestmark = pytest.mark.skipif(not gluon_hopper.available(), reason="this Triton has no Gluon Hopper API")

VARIANTS = [(64, False), (128, True), (256, False)]
# The CPU tests run Triton's interpreter, which cannot build Gluon: compile in a fresh process.
SCRIPT = """
import json, sys
from tessera.kernels.attention import gluon_hopper, hopper_ws
out = {}
for D, causal in json.loads(sys.argv[1]):
    out[f"{D}-{causal}"] = hopper_ws.compile_sm90(D, causal).asm["ptx"]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ptx(fresh_python):
    return json.loads(fresh_python(SCRIPT, json.dumps(VARIANTS)).strip().splitlines()[-1])


@pytest.mark.parametrize("D,causal", [(64, False), (128, True), (256, False)])
def test_kernel_compiles_warp_specialised(ptx, D, causal):
    code = ptx[f"{D}-{causal}"]
    budgets = {int(n) for n in re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", code)}
    consumer = 240 if hopper_ws.CONFIGS[D]["CONSUMERS"] == 2 else 160
    assert {24, consumer} <= budgets, f"producer/consumer register budgets missing: {budgets}"
    # wait_group 1 leaves the P·V product in flight while the next scores are consumed
    assert "wgmma.wait_group.sync.aligned 1;" in code
    assert code.count("cp.async.bulk.tensor.4d") >= 4  # TMA loads of Q, K, V and the output store
    # The probabilities go from the score accumulator to the A operand in registers: a round trip
    # through shared memory would add >= 16 vector or matrix loads into registers per softmax copy
    # (3 copies per consumer). The output's staging for its TMA store is written with stmatrix and
    # never read back; the scalar accesses and constant stores are the partitions' bookkeeping,
    # whose count varies with the Triton release.
    assert _register_tiles_through_shared(code) == 0, "unexpected shared-memory traffic"


def _register_tiles_through_shared(ptx: str) -> int:
    """Vector or matrix shared-memory loads into registers, and vector stores of registers."""
    vector = re.findall(r"(?:ld|st)\.shared\.v\d[^;]*%", ptx)
    return len(vector) + ptx.count("ldmatrix")


def test_unsupported_inputs_fall_back():
    cpu = torch.zeros(1, 1, 8, 64, dtype=torch.bfloat16)
    assert not hopper_ws.supported(cpu, cpu, cpu, cpu)
    assert hopper_ws.config(64)["CONSUMERS"] == 3 and hopper_ws.MIN_KEYS[64] > 1024


@pytest.mark.parametrize("kernel,D,products", [("compile_sm90", 128, 4), ("compile_dq_sm90", 128, 3),
                                               ("compile_dq_sm90", 256, 3), ("compile_sm90", 64, 4),
                                               ("compile_dq_sm90", 64, 3)])
def test_backward_kernels_compile_warp_specialised(fresh_python, kernel, D, products):
    from tessera.kernels.attention import hopper_ws_bwd

    plain = ", FUSE_DQ=False" if kernel == "compile_sm90" else ""  # dQ by its own kernel (fused: below)
    script = (f"from tessera.kernels.attention import hopper_ws_bwd as b; p = b.{kernel}({D}, True{plain}).asm['ptx']; "
              "print(p.count('wgmma.mma_async'), p.count('setmaxnreg'), p.count('ldmatrix') + p.count('ld.shared.v4'))")
    wgmma, setmaxnreg, tile_loads = map(int, fresh_python(script).split()[-3:])
    # dK/dV: S^T, dP^T, dV, dK per query block; dQ: S, dP, dQ per key block; in each of two consumers
    assert wgmma >= 2 * products and setmaxnreg >= 3
    # A round trip of the 16-bit P/dS tiles through shared memory would read them back with ldmatrix
    # or 128-bit loads; the rows' fp32 lse and delta, which the dK/dV kernel's consumers read from
    # shared memory, come in pairs.
    assert tile_loads == 0, "P/dS should reach their products in registers, not through shared memory"
    assert D in (hopper_ws_bwd.CONFIGS if kernel == "compile_sm90" else hopper_ws_bwd.DQ_CONFIGS)


@pytest.mark.parametrize("D", [64, 128])
def test_backward_computing_dq_reduces_it_through_tma(fresh_python, D):
    """With FUSE_DQ the dK/dV kernel multiplies every warpgroup's dSᵀ by its share of K's columns
    (two more products per consumer) and adds the share into the fp32 buffer by TMA reduce-adds of
    32-column chunks, within the shared memory."""
    script = ("import json, os, subprocess, tempfile, triton\n"
              "from tessera.kernels.attention import hopper_ws_bwd as b\n"
              f"plain, fused = (b.compile_sm90({D}, True, FUSE_DQ=f) for f in (False, True))\n"
              "print(json.dumps([[k.asm['ptx'].count(s) for s in ('wgmma.mma_async', 'cp.reduce.async.bulk.tensor')]"
              " + [k.metadata.shared] for k in (plain, fused)]))")
    (mma0, red0, smem0), (mma1, red1, smem1) = json.loads(fresh_python(script).strip().splitlines()[-1])
    assert red0 == 0 and red1 == D // 32  # each consumer: its D/2 columns in 32-column chunks
    assert mma1 > mma0
    assert smem0 < smem1 <= 227 * 1024
