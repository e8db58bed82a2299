"""The weight-only kernel compiled for sm_90 on the CPU: the swapped product is one group of
wgmma products per K block with the decoded weight as a register operand, which ptxas does not
serialise; the unswapped one uses mma.sync; nothing spills."""
import json

import pytest

# The CPU tests run Triton's interpreter, which cannot build for a GPU: compile in a fresh process.
SCRIPT = """
import json, os, subprocess, tempfile, triton
from tessera.kernels.matmul.configs import Config
from tessera.kernels.matmul.wo import compile_sm90
tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
variants = {"fp4-32": ("fp4_e2m1", 32, None), "fp4-16": ("fp4_e2m1", 16, None),
            "fp6-32": ("fp6_e2m3", 32, None), "fp6-16": ("fp6_e3m2", 16, None),
            "fp4-wide": ("fp4_e2m1", 32, Config("wo", 16, 128, 256, 1, 3, 4, 2, tma_loads=True, swap=True)),
            "fp4-unswapped": ("fp4_e2m1", 32, Config("wo", 16, 64, 128, 1, 3, 4, 2, tma_loads=True))}
out = {}
for name, (fmt, gs, cfg) in variants.items():
    k = compile_sm90(fmt, gs, cfg)
    with tempfile.TemporaryDirectory() as d:
        open(os.path.join(d, "k.ptx"), "w").write(k.asm["ptx"])
        open(os.path.join(d, "k.cubin"), "wb").write(k.asm["cubin"])
        info = subprocess.run([os.path.join(tools, "ptxas"), "-arch=sm_90a", "-v", os.path.join(d, "k.ptx"),
                               "-o", os.path.join(d, "o.cubin")], capture_output=True, text=True)
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", os.path.join(d, "k.cubin")],
                              capture_output=True, text=True).stdout
    out[name] = {"ptx": k.asm["ptx"], "ptxas": info.stdout + info.stderr, "spills": sass.count("STL"),
                 "hmma": sass.count("HMMA"), "hgmma": sass.count("HGMMA")}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled(fresh_python):
    return json.loads(fresh_python(SCRIPT).strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["fp4-32", "fp4-16", "fp6-32", "fp6-16", "fp4-wide"])
def test_swapped_product_is_unserialised_register_wgmma(compiled, name):
    k = compiled[name]
    # the weight is wgmma's A operand from registers: "{d..}, {a0, a1, a2, a3}, descB" (m64n16k16)
    rs = [line for line in k["ptx"].splitlines() if "wgmma.mma_async" in line and "m64n16k16" in line]
    assert rs and all(line.split(",")[8].strip().startswith("{") for line in rs), rs[:1]
    assert "C7515" not in k["ptxas"], k["ptxas"]  # "wgmma.mma_async instructions are serialized"
    assert k["hgmma"] > 0 and k["spills"] == 0


def test_unswapped_product_uses_mma_sync(compiled):
    k = compiled["fp4-unswapped"]
    assert k["hmma"] > 0 and k["hgmma"] == 0 and k["spills"] == 0
