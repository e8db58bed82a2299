"""Weight-only quantized GEMM kernel: ``x [M, K] @ dequant(q) [K, N]`` decoding fp6/fp4 codes in
registers. Built for decode shapes (small M), where reading the packed weight is the whole cost.

The packed weight is read by pointer loads or, where the row pitch allows (``USE_TMA``), by
TMA copies pipelined ``STAGES`` deep. It is stored per output column, so a program reads ``BN``
rows of contiguous packs, viewed as [BN, blocks of 32, 8 packs]. A pack holds four codes (an fp4
pack is a 16-bit word, :mod:`tessera.quant.fp4_words`; an fp6 pack one byte of each of three byte
planes): code j = 2a + c of pack p of a block is K = 16c + 8a + p (:mod:`tessera.quant.k_order`).
x is read whole, in K order; its columns are split four ways to meet each code of the packs, or,
swapped, the decoded codes are joined back into K order.

Decoding moves a code's exponent and mantissa bits to the bottom of a float's exponent field
(and the top of its mantissa) and its sign to the sign bit, which makes that float the code's
value times a power of two (codes with a zero exponent become subnormals, exactly). With bf16
activations (``PACKED``) the codes are decoded on packed registers by inline assembly — fp4 two
words (eight codes) per call, fp6 four packs of its three byte planes (sixteen codes) — straight
into bf16 pairs, then the power is multiplied away and the scale applied with two bf16x2
multiplies; otherwise each code is decoded through fp16 and the power is folded into the fp32
group scale.
With ``SWAP`` the block's product is taken swapped, ``w [BN, BK] @ xᵀ``: the decoded weight is
the tensor core's left operand straight from the registers that decoded it (a wgmma register
operand), where the unswapped product passes it through shared memory.
Split-K slices meet in :func:`~.splitk.finish_tile`. With BM == 1 (one activation row) the
product is a multiply and reduce in fp32 instead of a tensor-core dot.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ...quant.fp4_words import MAG_BIT, SIGN_BIT
from ...quant.k_order import CODE_K
from .splitk import finish_tile, split_tile

# The decoders are inline PTX: a 32-bit register holds one code per half-word, anywhere in it;
# shifts and masks move the code's exponent+mantissa bits to bf16 bits (7 - mbits).. and its sign
# to bit 15, which makes each half the code's value times 2**(bias - 127) (a subnormal for codes
# with a zero exponent). Multiplying by 2**(127 - bias) (``k``) restores the value exactly;
# multiplying by the bf16 group scale rounds once, as the fp32 path's cast to bf16 does.
def _decode_block(t: str, moves, out: str, scale: str) -> str:
    """PTX taking the code in each half of register ``t`` to the bf16 pair ``out`` times ``scale``;
    ``moves`` lists (left shift, mask) pairs (a negative shift moves right) whose results are or-ed."""
    parts = []
    for i, (shift, mask) in enumerate(moves):
        dst = "ab"[i]
        if shift:
            parts.append(f"shl.b32 {dst}, {t}, {shift};" if shift > 0 else f"shr.b32 {dst}, {t}, {-shift};")
        parts.append(f"and.b32 {dst}, {dst if shift else t}, {mask:#010x};")
    if len(moves) == 2:
        parts.append("or.b32 a, a, b;")
    parts.append(f"fma.rn.bf16x2 a, a, k, z; fma.rn.bf16x2 {out}, a, {scale}, z;")
    return " ".join(parts)


def _decoder_asm(regs: str, bias: int, lines: list) -> str:
    """The PTX block around ``lines``: scratch registers (``regs``, each followed by a comma),
    ``k`` = 2**(127 - bias) in both bf16 halves and ``z`` = -0.0 pairs (the fma addend that keeps a
    product's sign)."""
    k = ((254 - bias) << 7) * 0x10001
    head = [f".reg .b32 {regs}a, b, k, z;", f"mov.b32 k, {k:#010x};", "mov.b32 z, 0x80008000;"]
    return "{\n" + "\n".join(head + lines) + "\n}"


def _fp4_moves(j: int) -> list:
    """(shift, mask) moves taking code j of a stored fp4 word (:mod:`tessera.quant.fp4_words`) to bf16
    bits 6..8 and 15: one move where the code's sign sits 9 bits above its magnitude, else two."""
    mag, sign = 6 - MAG_BIT[j], 15 - SIGN_BIT[j]
    if mag == sign:
        return [(mag, 0x81C081C0)]
    return [(mag, 0x01C001C0), (sign, 0x80008000)]


def _fp4_to_bf16_asm(two_scales: bool = False) -> str:
    """Two stored fp4 words ($4, one per half) -> their codes 0..3 as bf16 pairs ($0..$3), times the
    bf16 group scales of the two words ($5). With ``two_scales`` the odd codes take $6: code j = 2a + c
    of a pack lies in the 16-input group c of its block (:mod:`tessera.quant.k_order`)."""
    return _decoder_asm("", 1, [_decode_block("$4", _fp4_moves(j), f"${j}", "$6" if two_scales and j & 1 else "$5")
                                for j in range(4)])


_FP4_TO_BF16 = tl.constexpr(_fp4_to_bf16_asm())
_FP4_TO_BF16_2S = tl.constexpr(_fp4_to_bf16_asm(True))
_FP4_MAG0, _FP4_MAG1, _FP4_MAG2, _FP4_MAG3 = (tl.constexpr(b) for b in MAG_BIT)
_CODE_K0, _CODE_K1, _CODE_K2, _CODE_K3 = (tl.constexpr(k) for k in CODE_K)
_FP4_SIGN0, _FP4_SIGN1, _FP4_SIGN2, _FP4_SIGN3 = (tl.constexpr(b) for b in SIGN_BIT)


@triton.jit
def _fp4_words_bf16(word, scale, scale_odd, TWO: tl.constexpr):
    """int16 stored fp4 words and their bf16 group scales -> the words' four codes times the scale, in
    bf16 (with ``TWO``, the odd codes times ``scale_odd``)."""
    if TWO:
        return tl.inline_asm_elementwise(_FP4_TO_BF16_2S, "=r,=r,=r,=r,r,r,r", [word, scale, scale_odd],
                                         (tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16), is_pure=True, pack=2)
    return tl.inline_asm_elementwise(_FP4_TO_BF16, "=r,=r,=r,=r,r,r", [word, scale],
                                     (tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16), is_pure=True, pack=2)


@triton.jit
def _fp4_code(word, MAG: tl.constexpr, SIGN: tl.constexpr):
    """The 4-bit e2m1 code stored at bits MAG..MAG+2 (magnitude) and SIGN of int32 ``word``."""
    return ((word >> MAG) & 7) | (((word >> SIGN) & 1) << 3)


def _fp6_to_bf16_asm(mbits: int, two_scales: bool = False) -> str:
    """Three words of fp6 byte planes ($8, $9, $10: four packs each) -> the packs' four codes as bf16
    pairs ($0..$7: code j of packs 0-1 and 2-3 in $2j, $2j+1), times the bf16 group scales ($11:
    packs 0-1, $12: packs 2-3; with ``two_scales`` the odd codes take $13 and $14, as for fp4). The
    codes are cut out of the planes four at a time (one per byte), then each byte pair is spread to
    the halves of ``t`` and decoded."""
    shift = 7 - mbits
    lines = ["and.b32 c0, $8, 0x3F3F3F3F;",
             "shr.b32 t, $8, 6; and.b32 t, t, 0x03030303; shl.b32 u, $9, 2; and.b32 u, u, 0x3C3C3C3C; or.b32 c1, t, u;",
             "shr.b32 t, $9, 4; and.b32 t, t, 0x0F0F0F0F; shl.b32 u, $10, 4; and.b32 u, u, 0x30303030; or.b32 c2, t, u;",
             "shr.b32 t, $10, 2; and.b32 c3, t, 0x3F3F3F3F;"]
    for j in range(4):
        for half, sel in enumerate(("0x4140", "0x4342")):
            scale = f"${11 + half + (2 if two_scales and j & 1 else 0)}"
            moves = [(shift, (0x1F << shift) * 0x10001), (10, 0x80008000)]
            lines.append(f"prmt.b32 t, c{j}, 0, {sel}; " + _decode_block("t", moves, f"${2 * j + half}", scale))
    return _decoder_asm("c<4>, t, u, ", 1 if mbits == 3 else 3, lines)


_FP6_E2M3_TO_BF16 = tl.constexpr(_fp6_to_bf16_asm(3))
_FP6_E3M2_TO_BF16 = tl.constexpr(_fp6_to_bf16_asm(2))
_FP6_E2M3_TO_BF16_2S = tl.constexpr(_fp6_to_bf16_asm(3, True))
_FP6_E3M2_TO_BF16_2S = tl.constexpr(_fp6_to_bf16_asm(2, True))


@triton.jit
def _fp6_codes_bf16(b0, b1, b2, scale, scale_odd, MBITS: tl.constexpr, TWO: tl.constexpr):
    """uint8 bytes of the three fp6 planes and bf16 group scales -> the four codes of each pack, times
    the scale, in bf16 (with ``TWO``, the odd codes times ``scale_odd``)."""
    if TWO:
        if MBITS == 3:
            asm2: tl.constexpr = _FP6_E2M3_TO_BF16_2S
        else:
            asm2: tl.constexpr = _FP6_E3M2_TO_BF16_2S
        return tl.inline_asm_elementwise(asm2, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r,r,r", [b0, b1, b2, scale, scale_odd],
                                         (tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
    if MBITS == 3:
        asm: tl.constexpr = _FP6_E2M3_TO_BF16
    else:
        asm: tl.constexpr = _FP6_E3M2_TO_BF16
    return tl.inline_asm_elementwise(asm, "=r,=r,=r,=r,=r,=r,=r,=r,r,r,r,r,r", [b0, b1, b2, scale],
                                     (tl.bfloat16, tl.bfloat16, tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)


@triton.jit
def _decode_scaled(c, s3, EBITS: tl.constexpr, MBITS: tl.constexpr):
    """int32 codes -> float32 values times the (pre-multiplied) scales ``s3``."""
    NB: tl.constexpr = EBITS + MBITS
    bits = ((c & ((1 << NB) - 1)) << (10 - MBITS)) | ((c >> NB) << 15)
    h = bits.to(tl.int16).to(tl.float16, bitcast=True)
    return h.to(tl.float32) * s3


@triton.jit
def _x_block(x_ptr, sxm, sxk, offs_m, M, k0, K, BK: tl.constexpr):
    """Rows ``offs_m`` of x at K positions [k0, k0 + BK), zero past M and K. Rows past M are not
    read at all (a one-row decode would otherwise pull its row through L2 once per tile row)."""
    k_all = k0 + tl.arange(0, BK)
    rm = tl.where(offs_m < M, offs_m, 0)
    return tl.load(x_ptr + rm[:, None] * sxm + k_all[None, :] * sxk,
                   mask=(offs_m < M)[:, None] & (k_all < K)[None, :], other=0.0)


@triton.jit
def _swapped_dot(acc_t, x, w0, w1, w2, w3, BN: tl.constexpr, BK: tl.constexpr):
    """``acc_t [BN, BM]`` plus the block's product taken swapped, ``w [BN, BK] @ xᵀ``, with the
    decoded weight as the tensor core's left operand straight from registers: ``wj [BN, BK/32, 8]``
    holds code j = 2a + c of pack p of each block of 32, at K = 16c + 8a + p (the stored order of
    :mod:`tessera.quant.k_order`, which puts it in the lane that decoded it)."""
    NB: tl.constexpr = BK // 32
    w = tl.join(tl.join(w0, w1), tl.join(w2, w3))  # [BN, NB, p, c, a]
    w = tl.reshape(tl.permute(w, (0, 1, 3, 4, 2)), (BN, BK))
    # "+ 0.0" is a use of the product inside the loop, so Triton waits for it at the end of the
    # block instead of splitting it into K-16 products: interleaved with the register moves that
    # feed them, those products are serialised by ptxas (one wait per 16 columns).
    return tl.dot(w, tl.trans(x), acc_t) + 0.0


@triton.jit
def _slot_columns(x, BM: tl.constexpr, BK: tl.constexpr):
    """x [BM, BK] -> the four [BM, BK/4] column sets that meet codes j = 0..3 of the packs, in pack
    order (code j = 2a + c of pack p of a block of 32 is K = 16c + 8a + p)."""
    NB: tl.constexpr = BK // 32
    x = tl.permute(tl.reshape(x, (BM, NB, 2, 2, 8)), (0, 1, 4, 3, 2))  # [BM, NB, p, a, c]
    x_c0, x_c1 = tl.split(tl.reshape(x, (BM, BK // 4, 2, 2)))
    x0, x2 = tl.split(x_c0)
    x1, x3 = tl.split(x_c1)
    return x0, x1, x2, x3


@triton.jit
def _slot_scale(s_row, k0, KP, CODE_K: tl.constexpr, GS: tl.constexpr, NB: tl.constexpr):
    """[BN, NB, 1] scales of the code ``CODE_K`` inputs past each block's packs (one group per block
    when GS >= 32)."""
    kk = k0 + 32 * tl.arange(0, NB) + CODE_K
    g = kk // GS
    return tl.load(s_row + g[None, :], mask=(g < KP // GS)[None, :], other=0.0)[:, :, None]


@triton.jit
def _row_partial(acc, x_row, sxk, k_pos, K, w, BN: tl.constexpr, BKP: tl.constexpr):
    """acc [1, BN] plus x's row at ``k_pos`` times the fp32 values ``w`` (multiply and reduce)."""
    x = tl.load(x_row + k_pos * sxk, mask=k_pos < K, other=0.0).to(tl.float32)
    return acc + tl.sum(tl.reshape(w, (BN, BKP)) * x[None, :], axis=1)[None, :]


@triton.jit
def wo_matmul_kernel(x_ptr, q_ptr, s_ptr, bias_ptr, out_ptr, ws_ptr, cnt_ptr,
                     M, N, K, KP, ldq, lds, sxm, sxk,
                     BITS: tl.constexpr, EBITS: tl.constexpr, MBITS: tl.constexpr, GS: tl.constexpr,
                     BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, SPLIT_K: tl.constexpr,
                     HAS_BIAS: tl.constexpr, USE_TMA: tl.constexpr, STAGES: tl.constexpr,
                     PACKED: tl.constexpr, SWAP: tl.constexpr):
    PER: tl.constexpr = 4  # codes per pack: an fp4 word, or a byte of each of fp6's three planes
    BKP: tl.constexpr = BK // PER  # packs per K block
    NB: tl.constexpr = BK // 32  # blocks of the stored K order (tessera.quant.k_order) per K block
    BIAS: tl.constexpr = (1 << (EBITS - 1)) - 1
    FOLD: tl.constexpr = float(2 ** (15 - BIAS))
    tile, split, pid_m, pid_n = split_tile(tl.program_id(0), N, BN, SPLIT_K)
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rn = tl.where(offs_n < N, offs_n, 0)
    offs_p3 = tl.arange(0, NB)[None, :, None] * 8 + tl.arange(0, 8)[None, None, :]  # [1, NB, 8] pack index
    offs_p = tl.arange(0, BKP)
    k_per_split = tl.cdiv(tl.cdiv(KP, BK), SPLIT_K) * BK
    k_lo = split * k_per_split
    k_hi = tl.minimum(KP, k_lo + k_per_split)
    if SWAP:
        acc = tl.zeros((BN, BM), dtype=tl.float32)
    else:
        acc = tl.zeros((BM, BN), dtype=tl.float32)
    if BITS == 4:  # rows of 16-bit words (ldq counts bytes)
        q_base = q_ptr.to(tl.pointer_type(tl.int16))
        ld_pack = ldq // 2
        row_packs = KP // 4
    else:
        q_base = q_ptr
        ld_pack = ldq
        row_packs = KP // 4 * 3
    q_row = q_base + rn[:, None, None].to(tl.int64) * ld_pack
    s_row = s_ptr + rn[:, None] * lds
    PLANE = KP // 4
    if USE_TMA:  # rows past N and bytes past the end read as zeros; codes past KP meet zero scales
        q_desc = tl.make_tensor_descriptor(q_base, shape=[N, row_packs], strides=[ld_pack, 1], block_shape=[BN, BKP])
    for ki in tl.range(0, tl.cdiv(k_hi - k_lo, BK), num_stages=STAGES):
        k0 = k_lo + ki * BK
        s0 = _slot_scale(s_row, k0, KP, _CODE_K0, GS, NB)  # code j = 2a + c: group c of the block when GS == 16
        if GS >= 32:
            s1 = s0
        else:
            s1 = _slot_scale(s_row, k0, KP, _CODE_K1, GS, NB)
        pk = k0 // PER + offs_p3
        pmask = pk < KP // PER
        if BITS == 4:
            if USE_TMA:
                word = tl.reshape(q_desc.load([pid_n * BN, k0 // PER]), (BN, NB, 8))
            else:
                word = tl.load(q_row + pk, mask=pmask, other=0)
            if PACKED:  # (a pack's codes in at most two groups: GS >= 16)
                w0, w1, w2, w3 = _fp4_words_bf16(word, s0, s1, GS < 32)
            else:
                word = word.to(tl.int32) & 0xFFFF
                c0 = _fp4_code(word, _FP4_MAG0, _FP4_SIGN0)
                c1 = _fp4_code(word, _FP4_MAG1, _FP4_SIGN1)
                c2 = _fp4_code(word, _FP4_MAG2, _FP4_SIGN2)
                c3 = _fp4_code(word, _FP4_MAG3, _FP4_SIGN3)
        else:
            if USE_TMA:
                b0 = tl.reshape(q_desc.load([pid_n * BN, k0 // PER]), (BN, NB, 8))
                b1 = tl.reshape(q_desc.load([pid_n * BN, PLANE + k0 // PER]), (BN, NB, 8))
                b2 = tl.reshape(q_desc.load([pid_n * BN, 2 * PLANE + k0 // PER]), (BN, NB, 8))
            else:
                b0 = tl.load(q_row + pk, mask=pmask, other=0)
                b1 = tl.load(q_row + PLANE + pk, mask=pmask, other=0)
                b2 = tl.load(q_row + 2 * PLANE + pk, mask=pmask, other=0)
            if PACKED:
                w0, w1, w2, w3 = _fp6_codes_bf16(b0, b1, b2, s0, s1, MBITS, GS < 32)
            else:
                b0, b1, b2 = b0.to(tl.int32), b1.to(tl.int32), b2.to(tl.int32)
                c0 = b0 & 63
                c1 = (b0 >> 6) | ((b1 & 15) << 2)
                c2 = (b1 >> 4) | ((b2 & 3) << 4)
                c3 = b2 >> 2
        if not PACKED:  # fp32 values times the scale of each code's group
            if GS >= 16:
                s2, s3 = s0, s1
            else:
                s2 = _slot_scale(s_row, k0, KP, _CODE_K2, GS, NB)
                s3 = _slot_scale(s_row, k0, KP, _CODE_K3, GS, NB)
            w0 = _decode_scaled(c0, s0.to(tl.float32) * FOLD, EBITS, MBITS)
            w1 = _decode_scaled(c1, s1.to(tl.float32) * FOLD, EBITS, MBITS)
            w2 = _decode_scaled(c2, s2.to(tl.float32) * FOLD, EBITS, MBITS)
            w3 = _decode_scaled(c3, s3.to(tl.float32) * FOLD, EBITS, MBITS)
        if SWAP:
            x = _x_block(x_ptr, sxm, sxk, offs_m, M, k0, K, BK)
            acc = _swapped_dot(acc, x, w0.to(x.dtype), w1.to(x.dtype), w2.to(x.dtype), w3.to(x.dtype), BN, BK)
        elif PACKED or BM > 1:  # tensor-core products of each code's columns
            x0, x1, x2, x3 = _slot_columns(_x_block(x_ptr, sxm, sxk, offs_m, M, k0, K, BK), BM, BK)
            acc = tl.dot(x0, tl.trans(tl.reshape(w0.to(x0.dtype), (BN, BKP))), acc)
            acc = tl.dot(x1, tl.trans(tl.reshape(w1.to(x0.dtype), (BN, BKP))), acc)
            acc = tl.dot(x2, tl.trans(tl.reshape(w2.to(x0.dtype), (BN, BKP))), acc)
            acc = tl.dot(x3, tl.trans(tl.reshape(w3.to(x0.dtype), (BN, BKP))), acc)
        else:  # one row of x: multiply and reduce, no tensor cores
            x_row = x_ptr + pid_m * sxm
            k_base = k0 + (offs_p // 8) * 32 + offs_p % 8
            acc = _row_partial(acc, x_row, sxk, k_base + _CODE_K0, K, w0, BN, BKP)
            acc = _row_partial(acc, x_row, sxk, k_base + _CODE_K1, K, w1, BN, BKP)
            acc = _row_partial(acc, x_row, sxk, k_base + _CODE_K2, K, w2, BN, BKP)
            acc = _row_partial(acc, x_row, sxk, k_base + _CODE_K3, K, w3, BN, BKP)

    if SWAP:
        acc = tl.trans(acc)
    finish_tile(acc, tile, split, offs_m, offs_n, M, N, out_ptr, ws_ptr, cnt_ptr, out_ptr, out_ptr, bias_ptr,
                out_ptr, out_ptr, 0, 0, BM, BN, SPLIT_K, 0, 0, HAS_BIAS, 0, False, False)
