"""The weight-only kernel's inline-PTX decoders, run on the CPU by a small emulator of the PTX
subset they use, against the format's exact decode times the scale rounded once to bf16.

Inline assembly does not run in the Triton interpreter, so this is what checks the decoders'
bit moves, byte spreads and scale pairing without a GPU (the GPU tests check them in the kernel).
"""
import ml_dtypes
import numpy as np
import pytest
import torch

import tessera.quant as q
from tessera.kernels.matmul import kernel_wo
from tessera.quant.formats import decode
from tessera.quant.fp4_words import words_from_codes

MASK = 0xFFFFFFFF


def _halves(r):
    return np.array([r & 0xFFFF, r >> 16], dtype=np.uint16).view(ml_dtypes.bfloat16).astype(np.float64)


def _pair(values):
    bits = np.asarray(values, dtype=np.float64).astype(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return int(bits[0]) | int(bits[1]) << 16


def run_ptx(asm: str, inputs: dict) -> dict:
    """Execute ``asm`` (the decoders' PTX subset) with ``inputs`` {"$n": uint32}; return every "$n"."""
    regs = dict(inputs)

    def val(tok):
        tok = tok.strip()
        if tok in regs:
            return regs[tok]
        return int(tok, 0)

    for stmt in asm.replace("{", ";").replace("}", ";").split(";"):
        stmt = stmt.strip()
        if not stmt or stmt.startswith(".reg"):
            continue
        op, args = stmt.split(None, 1)
        ops = [a.strip() for a in args.split(",")]
        d = ops[0]
        if op == "mov.b32":
            regs[d] = val(ops[1]) & MASK
        elif op == "shl.b32":
            regs[d] = (val(ops[1]) << val(ops[2])) & MASK
        elif op == "shr.b32":
            regs[d] = val(ops[1]) >> val(ops[2])
        elif op == "and.b32":
            regs[d] = val(ops[1]) & val(ops[2])
        elif op == "or.b32":
            regs[d] = val(ops[1]) | val(ops[2])
        elif op == "prmt.b32":  # default mode: result byte i = byte sel_i of {b, a}
            src = val(ops[1]) | (val(ops[2]) << 32)
            sel = val(ops[3])
            out = 0
            for i in range(4):
                nib = (sel >> (4 * i)) & 0xF
                assert nib < 8, "sign-replicating selectors are not used by the decoders"
                out |= ((src >> (8 * nib)) & 0xFF) << (8 * i)
            regs[d] = out
        elif op == "fma.rn.bf16x2":  # each half: a * b + c, rounded once (bf16 products are exact in fp64)
            a, b, c = (_halves(val(t)) for t in ops[1:])
            regs[d] = _pair(a * b + c)
        else:
            raise AssertionError(f"PTX op {op!r} not emulated")
    return regs


def _bf16(v):
    return float(np.float32(v).astype(ml_dtypes.bfloat16))


def _scales(rng, n):
    return [_bf16(2.0 ** rng.integers(-40, 41) * (1 + rng.random())) for _ in range(n)]


@pytest.mark.parametrize("two_scales", [False, True])
def test_fp4_decoder(two_scales):
    """Two stored words per register; output j is code j of both words times its scale (with two
    scales, the odd codes take the second: they lie in the next 16-input group)."""
    rng = np.random.default_rng(1)
    asm = kernel_wo._fp4_to_bf16_asm(two_scales)
    codes = torch.from_numpy(rng.integers(0, 16, size=(600, 8), dtype=np.uint8))
    codes[:16, :] = torch.arange(16, dtype=torch.uint8)[:, None]  # every code in every slot
    words = words_from_codes(codes).numpy().view(np.uint16)  # [600, 2]: two words per register
    values = decode(codes, "fp4_e2m1").double().numpy()
    for row in range(len(codes)):
        s_even, s_odd = _scales(rng, 2), _scales(rng, 2)
        inputs = {"$4": int(words[row, 0]) | int(words[row, 1]) << 16, "$5": _pair(s_even)}
        if two_scales:
            inputs["$6"] = _pair(s_odd)
        out = run_ptx(asm, inputs)
        for j in range(4):
            scale = s_odd if two_scales and j & 1 else s_even
            want = [_bf16(values[row, 4 * w + j] * scale[w]) for w in range(2)]
            assert np.array_equal(_halves(out[f"${j}"]), want), (row, j)


@pytest.mark.parametrize("fmt", ["fp6_e2m3", "fp6_e3m2"])
@pytest.mark.parametrize("two_scales", [False, True])
def test_fp6_decoder(fmt, two_scales):
    """Four packs per call, one byte of each from each plane; output 2j holds code j of packs 0-1,
    2j + 1 of packs 2-3, each pair times its scales."""
    rng = np.random.default_rng(2)
    asm = kernel_wo._fp6_to_bf16_asm(q.get_format(fmt).mbits, two_scales)
    codes = torch.from_numpy(rng.integers(0, 64, size=(300, 16), dtype=np.uint8))
    codes[:64, :] = torch.arange(64, dtype=torch.uint8)[:, None]
    planes = q.pack(codes, fmt).numpy().reshape(-1, 4, 3)  # [call, pack, plane byte]
    values = decode(codes, fmt).double().numpy()
    for row in range(len(codes)):
        sc = [_scales(rng, 2) for _ in range(4)]  # (packs 0-1, packs 2-3) x (even codes, odd codes)
        inputs = {f"${8 + p}": int.from_bytes(bytes(planes[row, :, p]), "little") for p in range(3)}
        inputs.update({"$11": _pair(sc[0]), "$12": _pair(sc[1])})
        if two_scales:
            inputs.update({"$13": _pair(sc[2]), "$14": _pair(sc[3])})
        out = run_ptx(asm, inputs)
        for j in range(4):
            for half in range(2):
                scale = sc[2 + half] if two_scales and j & 1 else sc[half]
                want = [_bf16(values[row, 4 * (2 * half + i) + j] * scale[i]) for i in range(2)]
                assert np.array_equal(_halves(out[f"${2 * j + half}"]), want), (row, j, half)
