"""Tile helpers shared by the GEMM kernels: grouped tile order (neighbouring programs reuse B in
L2) and the TMA descriptors of the operands, read in place whichever dim is contiguous."""
import triton
import triton.language as tl


@triton.jit
def grouped_tile(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    per_group = GROUP_M * num_pid_n
    group = tile_id // per_group
    first_m = group * GROUP_M
    rows = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (tile_id % per_group) % rows
    pid_n = (tile_id % per_group) // rows
    return pid_m, pid_n


@triton.jit
def operand_descs(a_ptr, b_ptr, M, N, K, lda, ldb, A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr,
                  BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """Descriptors of A [M, K] and B [K, N]: a K-major operand as is, an M-/N-major one as its transpose."""
    if A_KMAJOR:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[lda, 1], block_shape=[BM, BK])
    else:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[lda, 1], block_shape=[BK, BM])
    if B_KMAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[ldb, 1], block_shape=[BN, BK])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[ldb, 1], block_shape=[BK, BN])
    return a_desc, b_desc


@triton.jit
def load_operands(a_desc, b_desc, om, on, ok, A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr):
    """The A tile [BM, BK] at (om, ok) and the B tile [BK, BN] at (ok, on), from :func:`operand_descs`."""
    if A_KMAJOR:
        a = a_desc.load([om, ok])
    else:
        a = a_desc.load([ok, om]).T
    if B_KMAJOR:
        b = b_desc.load([on, ok]).T
    else:
        b = b_desc.load([ok, on])
    return a, b
