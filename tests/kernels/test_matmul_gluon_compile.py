"""The warp-specialised Gluon GEMM, compiled for sm_90 on the CPU: the partitions get their
register budgets, one product stays in flight, the loads and stores go through TMA, and nothing
spills."""
import json
import re

import pytest
import torch

from tessera.kernels.matmul import gluon_ws

pytestmark = pytest.mark.skipif(not gluon_ws.available(), reason="this Triton has no Gluon Hopper API")

# The CPU tests run Triton's interpreter, which cannot build Gluon: compile in a fresh process.
SCRIPT = """
import json, os, subprocess, tempfile, triton
from tessera.kernels.matmul import gluon_ws
tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
out = {}
import torch
fp8 = {"dtype": torch.float8_e4m3fn, "out_dtype": torch.bfloat16, "scales": (2, 2)}
variants = {"False": (False, {}), "True": (True, {}),
            "False-epilogue": (False, {"bias": True, "activation": "gelu", "residual": True}),
            "True-fp8": (True, fp8), "False-split": (False, {"STAGES": 4, "SPLIT_N": 2}),
            "False-gelu": (False, {"bias": True, "activation": "gelu"})}
for name, (bt, epi) in variants.items():
    k = gluon_ws.compile_sm90(bt, **epi)
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(k.asm["cubin"])
    sass = subprocess.run([tool, "-sass", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    out[name] = {"ptx": k.asm["ptx"], "spills": sass.count("STL"), "smem": k.metadata.shared}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled(fresh_python):
    return json.loads(fresh_python(SCRIPT).strip().splitlines()[-1])


@pytest.mark.parametrize("b_transposed", [False, True])
def test_gemm_compiles_warp_specialised(compiled, b_transposed):
    k = compiled[str(b_transposed)]
    code = k["ptx"]
    budgets = {int(n) for n in re.findall(r"setmaxnreg\.\w+\.sync\.aligned\.u32\s+(\d+)", code)}
    assert {24, 240} <= budgets, f"producer/consumer register budgets missing: {budgets}"
    # 64-deep K blocks: four m64n256k16 products per block in each of the two consumers
    assert code.count("wgmma.mma_async") == 8 and "m64n256k16" in code
    assert "wgmma.wait_group.sync.aligned 1;" in code  # one product in flight while the last retires
    # TMA loads of A and B (the shared-memory space is named ::cluster or ::cta by Triton version)
    assert len(re.findall(r"cp\.async\.bulk\.tensor\.2d\.shared::\w+\.global", code)) >= 2
    assert "cp.async.bulk.tensor.2d.global.shared::cta" in code  # TMA store of C
    assert k["spills"] == 0, "the 64x256 fp32 accumulator should fit the consumers' 240 registers"
    assert k["smem"] <= 227 * 1024


def test_epilogue_is_applied_after_the_main_loop(compiled):
    plain, fused = compiled["False"], compiled["False-epilogue"]
    # the same main loop: the epilogue adds no products and keeps the TMA store
    assert fused["ptx"].count("wgmma.mma_async") == plain["ptx"].count("wgmma.mma_async") == 8
    assert "cp.async.bulk.tensor.2d.global.shared::cta" in fused["ptx"]
    # erf for GELU, and the bias and residual read from global memory
    assert fused["ptx"].count("ld.global") > plain["ptx"].count("ld.global")


def test_fp8_products_are_32_deep(compiled):
    k = compiled["True-fp8"]
    # 128-deep fp8 K blocks: four m64n256k32 e4m3 products per block in each consumer, no spills
    assert k["ptx"].count("wgmma.mma_async") == 8 and "m64n256k32.f32.e4m3.e4m3" in k["ptx"]
    assert k["spills"] == 0 and k["smem"] <= 227 * 1024


def test_split_output_makes_room_for_a_fourth_stage(compiled):
    plain, split = compiled["False"], compiled["False-split"]
    # two half-width TMA stores per consumer and tile, no extra shared-memory traffic, no spills
    stores = "cp.async.bulk.tensor.2d.global"
    assert split["ptx"].count(stores) == 2 * plain["ptx"].count(stores)
    assert split["ptx"].count("stmatrix") == plain["ptx"].count("stmatrix") and split["spills"] == 0
    assert plain["smem"] < split["smem"] <= 227 * 1024


def test_supported_and_config():
    assert not gluon_ws.supported(torch.zeros(8, 16), torch.zeros(16, 8))  # fp32, CPU
    assert not gluon_ws.supported(torch.zeros(8, 16, dtype=torch.bfloat16), torch.zeros(8, 8, dtype=torch.bfloat16))
    bf = dict(dtype=torch.bfloat16)
    assert not gluon_ws.supported(torch.zeros(8, 16, **bf), torch.zeros(12, 16, **bf).t())  # 12-column rows of C
    assert gluon_ws.config(STAGES=4, GROUP_M=None) == dict(gluon_ws.CONFIG, STAGES=4)
    assert gluon_ws.config(fp8=True)["BLOCK_K"] == 128


def test_epilogue_runs_on_column_halves_without_spills(compiled):
    # bias + GELU (the fused linear) on each half of the tile: at most a word or two spilled (0 with
    # Triton 3.6, 1 with 3.9; the whole tile at once spilled 41), still one TMA store per tile
    plain, gelu = compiled["False"], compiled["False-gelu"]
    assert gelu["spills"] <= 2
    stores = "cp.async.bulk.tensor.2d.global"
    assert gelu["ptx"].count(stores) == plain["ptx"].count(stores)
