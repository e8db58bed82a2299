"""Kernel configurations: the heuristic default for a problem, and the space the tuner searches.

A :class:`Config` names the kernel ("tma": persistent TMA kernel, Hopper; "skinny": split-K
TMA kernel for a few rows, Hopper; "ptr": pointer kernel with optional split-K; "gluon": the
warp-specialised Gluon kernel, Hopper; "cublas": torch.matmul, chosen only by
measurement) and its block shapes, pipeline depth and warps.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import List


@dataclass(frozen=True)
class Config:
    kernel: str
    BM: int = 128
    BN: int = 128
    BK: int = 64
    GROUP_M: int = 8
    stages: int = 3
    warps: int = 8
    split_k: int = 1
    subtile: bool = False
    flatten: bool = False
    warp_spec: bool = False
    swap: bool = False  # skinny and weight-only kernels: the weight tile is the MMA's left operand
    tma_loads: bool = False  # weight-only kernel: packed weight read by pipelined TMA copies
    packed: bool = True  # weight-only kernel: codes decoded on packed registers (bf16 activations, BM >= 16)

    def to_json(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_json(d: dict) -> "Config":
        cfg = Config(**d)
        if cfg.kernel not in ("tma", "skinny", "ptr", "gluon", "cublas", "wo"):
            raise ValueError(f"unknown kernel {cfg.kernel!r}")
        return cfg


# the Gluon kernel's 128 x 256 tiles, 64-deep K blocks, three stages, groups of 16 row blocks
# (warps: its default partition)
GLUON_DEFAULT = Config("gluon", 128, 256, 64, 16, 3, 4)


@dataclass(frozen=True)
class Problem:
    """What the choice of config depends on."""

    M: int
    N: int
    K: int
    batch: int
    itemsize: int
    tma_ok: bool
    interpret: bool
    num_sms: int
    fp8: bool = False
    gluon_ok: bool = False  # the Gluon kernel may serve it (Hopper, not turned off, its layout conditions)
    epilogue: bool = False  # bias, activation, residual or pre-activation fused after the product

    def tiles(self, BM: int, BN: int) -> int:
        """How many BM x BN output tiles the problem has (per batch entry)."""
        return -(-self.M // BM) * -(-self.N // BN)

    def bucket(self) -> tuple:
        """Shape bucket: each dim rounded to the nearest power of two (in log space)."""
        return (_bucket(self.M), _bucket(self.N), _bucket(self.K))


def _bucket(x: int) -> int:
    lo = 1 << max(0, x.bit_length() - 1)
    return lo if x <= lo * 3 // 2 else lo * 2


def split_k_for(tiles: int, K: int, BK: int, max_programs: int, min_blocks: int) -> int:
    """The split-K factor (a power of two, at most 16): doubled while tiles x split stays within
    ``max_programs`` and each split keeps at least ``min_blocks`` K blocks of ``BK``."""
    split = 1
    while split < 16 and tiles * split * 2 <= max_programs and K // (split * 2) >= min_blocks * BK:
        split *= 2
    return split


def _pick_split(p: Problem, BM: int, BN: int, BK: int) -> int:
    """Pointer kernel: up to about two programs per SM, four K blocks per split."""
    return split_k_for(p.tiles(BM, BN), p.K, BK, 2 * p.num_sms, 4)


def small_m_config(p: Problem) -> Config:
    BM = 16 if p.M <= 16 else 32 if p.M <= 32 else 64
    BN, BK = 64, 128
    return Config("ptr", BM, BN, BK, 8, 4, 4, _pick_split(p, BM, BN, BK) if p.batch == 1 else 1)


def skinny_config(p: Problem, BN: int = 64, BK: int = 0, stages: int = 0, split: int = 0,
                  swap: bool = True, warps: int = 4) -> Config:
    """The skinny (decode) kernel. H100 sweep (benchmarks/results/matmul.md): best with about one
    program per SM (split-K only while tiles x split stays within the SM count), K blocks of 256
    (128 at 128 rows) and as many stages as fit ~192 KB of shared memory."""
    BM = max(16, min(128, 1 << (p.M - 1).bit_length()))
    BK = BK or (256 if BM <= 64 else 128) * 2 // p.itemsize  # the same bytes per stage for fp32
    stages = stages or max(2, min(6, (192 * 1024) // ((BN + BM) * BK * p.itemsize)))
    split = split or split_k_for(p.tiles(BM, BN), p.K, BK, p.num_sms, 2)
    return Config("skinny", BM, BN, BK, 1, stages, warps, split, swap=swap)


def skinny_candidates(p: Problem) -> List[Config]:
    """Tile width, K block and pipeline depth around the default, each with half and double the split."""
    tiles = [(64, 128, 4, 4), (64, 256, 3, 4), (128, 128, 4, 4), (32, 256, 4, 4)]
    if p.M > 32:
        # wider tiles (fewer re-reads of the activations): slower than BN 64 at the H100's decode
        # shapes (benchmarks/results/matmul.md), kept for the tuner to time on other shapes and cards
        tiles += [(128, 128, 3, 8), (256, 64, 3, 8)]
    out = []
    for BN, BK, stages, warps in tiles:
        d = skinny_config(p, BN, BK, stages, warps=warps)
        for split in sorted({max(1, d.split_k // 2), d.split_k, min(16, d.split_k * 2)}):
            out.append(replace(d, split_k=split))
    out.append(replace(skinny_config(p), swap=False))
    return out


def _skinny_ok(p: Problem) -> bool:
    return p.tma_ok and p.batch == 1 and not p.fp8


def default_config(p: Problem) -> Config:
    """The heuristic choice when tuning is off."""
    if p.interpret:
        if p.tma_ok and p.batch == 1 and p.M > 64:
            return Config("tma", 32, 32, 16, 4, 1, 4)
        return Config("ptr", 16, 32, 16, 4, 1, 4)
    if p.M <= 64 or (p.M <= 128 and -(-p.N // 128) < p.num_sms // 2):
        # H100 sweep (benchmarks/results/matmul.md): the skinny TMA kernel runs decode shapes at
        # cuBLAS's speed; the pointer kernel serves strides TMA cannot read.
        return skinny_config(p) if _skinny_ok(p) else small_m_config(p)
    if p.tma_ok and p.batch == 1:
        # H100 (benchmarks/results/matmul.md): fp8 best with sub-tiled, flattened epilogue
        # (warp-specialised variants 3-5% slower); bf16 best with warp specialisation (8192^3:
        # 777 vs 730 TFLOP/s). H200 sweeps: four stages and a sub-tiled epilogue faster at the
        # large shapes by 2-9%, except the 16384-wide output, where three stages stayed 2-7% ahead.
        tiles = p.tiles(128, 256)
        if tiles >= p.num_sms and p.gluon_ok and not p.epilogue and p.N < 16384:
            # H200: 1.00-1.15x cuBLAS at the suite's large shapes, and fp8 8192^3 1.04-1.05x the
            # Triton kernel in interleaved rounds; at the 16384-wide output (0.91-1.00x in three
            # runs) and with a fused epilogue (0.72x at bias + GELU) the Triton kernel stays
            # ahead, and the tuner times both there (results/matmul.md)
            return replace(GLUON_DEFAULT, BK=128) if p.fp8 else GLUON_DEFAULT  # 128 bytes a row
        if p.fp8:
            return Config("tma", 128, 256, 128, 8, 3, 8, subtile=True, flatten=True)
        if tiles >= p.num_sms:
            if p.N >= 16384:
                return Config("tma", 128, 256, 64, 8, 3, 8, warp_spec=True)
            return Config("tma", 128, 256, 64, 8, 4, 8, subtile=True, warp_spec=True)
        return Config("tma", 128, 128, 64, 8, 4, 8)
    return Config("ptr", 128, 128, 64, 8, 3, 8)


def candidates(p: Problem) -> List[Config]:
    """The configs the tuner times for this problem (the default first)."""
    out = [default_config(p)]
    if p.M <= 128 and p.batch == 1:
        BM = 16 if p.M <= 16 else 32 if p.M <= 32 else 64
        for BN in (64, 128):
            for BK in (128, 256):
                s = _pick_split(p, BM, BN, BK)
                for split in sorted({max(1, s // 2), s, min(16, s * 2)}):
                    out.append(Config("ptr", BM, BN, BK, 8, 4 if BK == 128 else 3, 4, split))
        if _skinny_ok(p):
            out += skinny_candidates(p)
    if p.tma_ok and p.batch == 1 and p.M > 64:
        if p.fp8:
            shapes = [(128, 256, 128, 3, 8, True), (128, 256, 128, 4, 8, True), (128, 128, 128, 4, 8, False),
                      (256, 128, 128, 3, 8, True)]
        else:
            shapes = [(128, 256, 64, 3, 8, False), (128, 256, 64, 3, 8, True), (128, 256, 64, 4, 8, True),
                      (128, 128, 64, 4, 8, False), (256, 128, 64, 3, 8, True), (128, 128, 128, 3, 8, False)]
        for BM, BN, BK, st, w, sub in shapes:
            out.append(Config("tma", BM, BN, BK, 8, st, w, subtile=sub))
        if not p.fp8:  # warp-specialised (no flattening with it on Hopper)
            out.append(Config("tma", 128, 256, 64, 8, 3, 8, warp_spec=True))
            out.append(Config("tma", 128, 256, 64, 8, 4, 8, subtile=True, warp_spec=True))
        if p.gluon_ok and p.tiles(128, 256) >= p.num_sms:
            gluon = replace(GLUON_DEFAULT, BK=128) if p.fp8 else GLUON_DEFAULT  # 128 bytes a row
            out += [replace(gluon, GROUP_M=g) for g in (4, 8, 16)]
            out.append(replace(gluon, stages=4, subtile=True))  # output stored in halves: room for a 4th stage
        base = default_config(replace(p, gluon_ok=False))  # the TMA kernel's default
        out.append(replace(base, flatten=not base.warp_spec))
        out.append(replace(base, GROUP_M=16))
    if not p.tma_ok or p.batch > 1:
        for BM, BN, BK, st, w in [(128, 128, 64, 3, 8), (128, 256, 64, 3, 8), (64, 128, 64, 4, 4)]:
            out.append(Config("ptr", BM, BN, BK, 8, st, w))
    return list(dict.fromkeys(out))
