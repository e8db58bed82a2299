"""The functional model library: each function validates its arguments, then binds a primitive.

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     logits = ts.zeros(2, 5, 10)
    ...     ts.nn.cross_entropy(logits, ts.zeros(2, 5, dtype=ts.int64)).item() > 2.30
    True
"""
from __future__ import annotations

from ..core.dispatch import bind
from ..core.tensor import Tensor
from .. import dtypes as dt
from ..dtypes import as_dtype
from ..errors import TesseraDTypeError, TesseraTypeError, TesseraValueError
from ..ops import api
from ..ops.fp8_ops import fp8_linear
from ..ops.linalg import ACTIVATIONS, LINEAR, matmul_dtype
from ..ops.nn_ops import (ACTIVATION, ADD_LAYER_NORM, ADD_RMS_NORM, CROSS_ENTROPY, DROPOUT, FLASH_ATTENTION,
                          LAYER_NORM, LINEAR_CROSS_ENTROPY, RMS_NORM, ROTARY, SOFTMAX, SWIGLU, recording_now)
from ..ops.rules import normalize_axis
from ..ops.varlen_attention import FLASH_ATTENTION_VARLEN
from ..runtime.checks import may_read_values


def _tensor(fn: str, name: str, x, optional: bool = False):
    if x is None and optional:
        return
    if not isinstance(x, Tensor):
        raise TesseraTypeError(f"ts.nn.{fn}: {name} must be a ts.Tensor, got {type(x).__name__}"
                               + ("; wrap it with ts.tensor(...)" if hasattr(x, "__array__") or hasattr(x, "__dlpack__") else ""))


def linear(x, w, bias=None, *, activation=None, residual=None, out_dtype=None, x_scale=None, w_scale=None):
    """``activation(x @ w + bias) + residual`` with ``w`` laid out ``[in, out]``, stored as
    ``out_dtype`` (default: x's dtype). On GPU the bias, activation, residual add and cast run in
    the GEMM's epilogue.

    ``activation`` is one of None, "gelu", "gelu_tanh", "silu", "relu"; ``residual`` broadcasts to
    the output (a transformer's skip connection). With fp8 ``x`` and ``w`` the product runs on fp8
    tensor cores as :func:`fp8_linear` does, with their ``x_scale``/``w_scale`` (default 1), the bias
    fused (activation and residual follow), output bf16 unless ``out_dtype`` says. An fp8 ``w`` with a wider ``x`` keeps x's precision
    (the weight is widened, times ``w_scale`` when given).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.linear(ts.ones(8, 16), ts.ones(16, 4), ts.zeros(4), activation="relu",
        ...                      residual=ts.ones(8, 4), out_dtype=ts.f32)
        >>> y.shape, y.dtype, y[0, 0].item()
        ((8, 4), f32, 17.0)
    """
    for name, t in (("x", x), ("w", w)):
        _tensor("linear", name, t)
    _tensor("linear", "bias", bias, optional=True)
    _tensor("linear", "residual", residual, optional=True)
    if activation not in ACTIVATIONS:
        raise TesseraValueError(f"ts.nn.linear: activation must be one of {ACTIVATIONS}, got {activation!r}")
    matmul_dtype("linear", x, w, names=("x", "w"))
    out_dtype = None if out_dtype is None else as_dtype(out_dtype)
    x_fp8, w_fp8 = (t.dtype.storage.name.startswith("fp8") for t in (x, w))
    if (x_scale is not None and not x_fp8) or (w_scale is not None and not w_fp8):
        raise TesseraDTypeError(f"ts.nn.linear: x_scale/w_scale belong to fp8 operands, but x is {x.dtype.name} and "
                                f"w is {w.dtype.name}; quantize them with ts.quantize_fp8, or drop the scales")
    if x_fp8 and w_fp8:
        return _fp8_linear(x, w, bias, activation, residual, out_dtype, x_scale, w_scale)
    if w_fp8 and w_scale is not None:  # keep x's precision: widen the weight
        w = w.to(x.dtype) * w_scale.to(x.dtype)
    return bind(LINEAR, x, w, bias, residual, activation=activation, accum=x.dtype.accum or w.dtype.accum,
                out_dtype=out_dtype)[0]


def _fp8_linear(x, w, bias, activation, residual, out_dtype, x_scale, w_scale):
    """``ts.nn.linear`` on fp8 x and w: the scaled fp8 product of :func:`fp8_linear` (bias fused; an
    activation and a residual follow as their own ops)."""
    one = api.ones((), dtype=dt.f32, device=w.device)
    y = fp8_linear(x, w, bias, w_scale=one if w_scale is None else w_scale,
                   x_scale=one if x_scale is None else x_scale, out_dtype=out_dtype or dt.bf16)
    if activation is not None:
        y = bind(ACTIVATION, y, kind=activation)
    return y if residual is None else y + residual.to(y.dtype)


def matmul(a, b):
    """Matrix product (same as ``ts.matmul`` and ``a @ b``).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.matmul(ts.ones(2, 3), ts.ones(3, 4))
        >>> y.shape, y[0, 0].item()
        ((2, 4), 3.0)
    """
    return api.matmul(a, b)


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5):
    """Layer normalisation over the last dim, statistics in f32.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.layer_norm(ts.arange(4, dtype=ts.f32).reshape(1, 4))
        >>> round(float(y.mean()), 6), round(float((y * y).mean()), 3)
        (0.0, 1.0)
    """
    _tensor("layer_norm", "x", x)
    _tensor("layer_norm", "weight", weight, optional=True)
    _tensor("layer_norm", "bias", bias, optional=True)
    return bind(LAYER_NORM, x, weight, bias, eps=float(eps))[0]


def rms_norm(x, weight=None, eps: float = 1e-6):
    """RMS normalisation over the last dim: ``x / sqrt(mean(x**2) + eps) * weight``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.rms_norm(ts.tensor([[3.0, -3.0, 3.0, -3.0]]), weight=ts.full((4,), 2.0))
        >>> [round(v, 4) for v in y[0].tolist()]
        [2.0, -2.0, 2.0, -2.0]
    """
    _tensor("rms_norm", "x", x)
    _tensor("rms_norm", "weight", weight, optional=True)
    return bind(RMS_NORM, x, weight, eps=float(eps))[0]


def gelu(x, approximate: str = "none"):
    """GELU, exact (``approximate="none"``) or with the tanh approximation.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     x = ts.tensor([-1.0, 0.0, 1.0])
        >>> [round(v, 4) for v in ts.nn.gelu(x).tolist()], round(ts.nn.gelu(x, approximate="tanh")[2].item(), 4)
        ([-0.1587, 0.0, 0.8413], 0.8412)
    """
    _tensor("gelu", "x", x)
    if approximate not in ("none", "tanh"):
        raise TesseraValueError(f"ts.nn.gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return bind(ACTIVATION, x, kind="gelu" if approximate == "none" else "gelu_tanh")


def silu(x):
    """SiLU (swish): ``x * sigmoid(x)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     [round(v, 4) for v in ts.nn.silu(ts.tensor([0.0, 1.0, -1.0])).tolist()]
        [0.0, 0.7311, -0.2689]
    """
    _tensor("silu", "x", x)
    return bind(ACTIVATION, x, kind="silu")


def relu(x):
    """ReLU: ``max(x, 0)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     ts.nn.relu(ts.tensor([-2.0, 0.5])).tolist(), ts.nn.relu(ts.tensor([-3, 4])).tolist()
        ([0.0, 0.5], [0, 4])
    """
    _tensor("relu", "x", x)
    return api.maximum(x, 0.0 if x.dtype.is_floating else 0)


def softmax(x, dim: int = -1):
    """Softmax along ``dim`` (computed in f32).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     p = ts.nn.softmax(ts.log(ts.tensor([[1.0, 3.0], [2.0, 2.0]])), dim=-1)
        >>> [[round(v, 4) for v in row] for row in p.tolist()]
        [[0.25, 0.75], [0.5, 0.5]]
    """
    _tensor("softmax", "x", x)
    return bind(SOFTMAX, x, axis=normalize_axis("softmax", dim, x.ndim), log=False)


def log_softmax(x, dim: int = -1):
    """Log-softmax along ``dim`` (computed in f32).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.log_softmax(ts.zeros(2, 4), dim=1)
        >>> y.shape, round(y[0, 0].item(), 4)
        ((2, 4), -1.3863)
    """
    _tensor("log_softmax", "x", x)
    return bind(SOFTMAX, x, axis=normalize_axis("log_softmax", dim, x.ndim), log=True)


def dropout(x, p: float, seed: int):
    """Dropout with a counter-based (Philox) mask: the same ``seed`` gives the same mask on any device.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     a = ts.nn.dropout(ts.ones(1000), 0.5, seed=3)
        ...     b = ts.nn.dropout(ts.ones(1000), 0.5, seed=3)
        >>> bool((a == b).numpy().all()), set(a.numpy().tolist()) <= {0.0, 2.0}
        (True, True)
    """
    _tensor("dropout", "x", x)
    if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
        raise TesseraValueError(f"ts.nn.dropout: p must be in [0, 1), got {p!r}")
    if not isinstance(seed, int):
        raise TesseraTypeError(f"ts.nn.dropout: seed must be an int, got {type(seed).__name__}")
    if p == 0.0:
        return x
    return bind(DROPOUT, x, p=float(p), seed=seed)


def _ids_in_range(ids, table) -> None:
    """Raise TesseraValueError for an id outside ``[0, V)``: always on the CPU, on a GPU with ``TESSERA_CHECKS=1``
    (one device-to-host sync); traced ids are not checked."""
    if type(ids) is not Tensor or ids.dtype.kind not in ("int", "uint") or ids.numel() == 0:
        return
    t = ids.torch()
    if not may_read_values(t):
        return
    V = table.shape[0]
    bad = (t < 0) | (t >= V)
    if bool(bad.any()):
        pos = tuple(int(i) for i in bad.nonzero()[0])
        where = f"ids[{', '.join(map(str, pos))}]" if pos else "ids"
        raise TesseraValueError(f"ts.nn.embedding: {where} = {int(t[pos])} is outside [0, {V}), the rows of table "
                                f"(shape {tuple(table.shape)}); fix the ids or use a table with more rows")


def embedding(ids, table):
    """Rows of ``table`` (``[V, D]``) at integer ``ids`` (any shape): output ``ids.shape + (D,)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     table = ts.arange(6, dtype=ts.f32).reshape(3, 2)
        ...     ts.nn.embedding(ts.tensor([[2, 0]]), table).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    _tensor("embedding", "ids", ids)
    _tensor("embedding", "table", table)
    if table.ndim != 2:
        raise TesseraValueError(f"ts.nn.embedding: table must be 2-D [num_embeddings, dim], got rank {table.ndim}")
    _ids_in_range(ids, table)
    return api.take(table, ids, 0)


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, z_loss: float = 0.0):
    """Cross-entropy with classes in the last dim of ``logits`` (``[..., V]``) and integer ``targets`` (``[...]``).

    ``reduction`` is "mean" (over non-ignored targets), "sum" or "none". The gradient is computed
    in the same pass as the loss when a tape is recording.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     logits, targets = ts.zeros(3, 4), ts.tensor([0, 1, -100])
        ...     per_token = ts.nn.cross_entropy(logits, targets, reduction="none")
        >>> [round(v, 4) for v in per_token.tolist()]
        [1.3863, 1.3863, 0.0]
    """
    _tensor("cross_entropy", "logits", logits)
    _tensor("cross_entropy", "targets", targets)
    loss, _ = bind(CROSS_ENTROPY, logits, targets, ignore_index=int(ignore_index),
                   label_smoothing=float(label_smoothing), z_loss=float(z_loss), reduction=reduction,
                   compute_grad=recording_now())
    return loss


def flash_attention(q, k, v, causal: bool = False, mask=None, scale=None, dropout_p: float = 0.0, seed: int = 0):
    """Attention over ``[B, H, S, D]`` tensors without materialising the score matrix on GPU.

    k/v may have fewer heads than q (grouped-query attention). ``mask`` is boolean (True = may
    attend) or additive, broadcastable to ``[B, H, Sq, Sk]``; causal masking is aligned to the
    bottom-right when Sq != Sk; fully masked rows give zeros.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     q = ts.randn(1, 2, 5, 8)
        ...     ts.nn.flash_attention(q, q, q, causal=True).shape
        (1, 2, 5, 8)
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _tensor("flash_attention", name, t)
    _tensor("flash_attention", "mask", mask, optional=True)
    if not 0.0 <= dropout_p < 1.0:
        raise TesseraValueError(f"ts.nn.flash_attention: dropout_p must be in [0, 1), got {dropout_p}")
    out, _ = bind(FLASH_ATTENTION, q, k, v, mask, causal=bool(causal), scale=None if scale is None else float(scale),
                  dropout_p=float(dropout_p), seed=int(seed))
    return out


def flash_attention_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k=None, *, causal: bool = False, scale=None,
                           max_seqlen_q=None, max_seqlen_k=None):
    """Attention over packed sequences of unequal lengths, without padding: q ``[total_q, H, D]``,
    k/v ``[total_k, Hkv, D]``, sequence b holding tokens ``cu_seqlens[b]:cu_seqlens[b+1]``
    (``cu_seqlens_k`` defaults to ``cu_seqlens_q``). Causal masking is bottom-right aligned within
    each sequence. ``max_seqlen_*`` (the longest sequence) are computed from the offsets when not
    given, which reads them back from the device once.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     q = ts.randn(7, 2, 8)                       # two sequences: 3 and 4 tokens
        ...     cu = ts.tensor([0, 3, 7], dtype=ts.int32)
        ...     ts.nn.flash_attention_varlen(q, q, q, cu, causal=True).shape
        (7, 2, 8)
    """
    cu_seqlens_k = cu_seqlens_q if cu_seqlens_k is None else cu_seqlens_k
    for name, t in (("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        _tensor("flash_attention_varlen", name, t)

    def longest(cu, given):
        if given is not None:
            return int(given)
        lengths = cu.torch()[1:] - cu.torch()[:-1]
        return int(lengths.max()) if lengths.numel() else 0

    out, _ = bind(FLASH_ATTENTION_VARLEN, q, k, v, cu_seqlens_q, cu_seqlens_k, causal=bool(causal),
                  scale=None if scale is None else float(scale), max_seqlen_q=longest(cu_seqlens_q, max_seqlen_q),
                  max_seqlen_k=longest(cu_seqlens_k, max_seqlen_k))
    return out


def linear_cross_entropy(h, w, targets, bias=None, ignore_index: int = -100, reduction: str = "mean",
                         label_smoothing: float = 0.0, chunk_size: int = 4096, z_loss: float = 0.0):
    """``cross_entropy(linear(h, w, bias), targets)`` without ever holding the full logits: tokens are
    processed ``chunk_size`` at a time and the gradients are computed on the way.

    ``h`` is ``[N, D]``, ``w`` ``[D, V]`` (laid out ``[in, out]``), ``targets`` ``[N]``; ``z_loss`` adds
    ``z_loss * logsumexp(logits) ** 2`` per token, as in :func:`cross_entropy`.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     h, w = ts.randn(10, 8), ts.randn(8, 50)
        ...     t = ts.randint(0, 50, (10,), dtype=ts.int64)
        ...     a = ts.nn.linear_cross_entropy(h, w, t, chunk_size=3)
        ...     b = ts.nn.cross_entropy(ts.nn.linear(h, w), t)
        >>> abs(float(a) - float(b)) < 1e-4
        True
    """
    for name, t in (("h", h), ("w", w), ("targets", targets)):
        _tensor("linear_cross_entropy", name, t)
    _tensor("linear_cross_entropy", "bias", bias, optional=True)
    if reduction not in ("mean", "sum", "none"):
        raise TesseraValueError(f"ts.nn.linear_cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not (isinstance(chunk_size, int) and chunk_size > 0):
        raise TesseraValueError(f"ts.nn.linear_cross_entropy: chunk_size must be a positive int, got {chunk_size!r}")
    return bind(LINEAR_CROSS_ENTROPY, h, w, bias, targets, ignore_index=int(ignore_index),
                label_smoothing=float(label_smoothing), reduction=reduction, chunk=chunk_size,
                z_loss=float(z_loss))[0]


def swiglu(gate, up):
    """``silu(gate) * up``, the gated MLP activation of LLaMA-style models.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y = ts.nn.swiglu(ts.tensor([0.0, 1.0]), ts.tensor([2.0, 2.0]))
        >>> [round(v, 4) for v in y.tolist()]
        [0.0, 1.4621]
    """
    _tensor("swiglu", "gate", gate)
    _tensor("swiglu", "up", up)
    return bind(SWIGLU, gate, up)


def add_layer_norm(x, residual, weight=None, bias=None, eps: float = 1e-5):
    """Residual add fused with the following norm: returns ``(layer_norm(x + residual), x + residual)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y, s = ts.nn.add_layer_norm(ts.ones(1, 4), ts.arange(4, dtype=ts.f32).reshape(1, 4))
        >>> s.tolist(), [round(v, 3) for v in y[0].tolist()]
        ([[1.0, 2.0, 3.0, 4.0]], [-1.342, -0.447, 0.447, 1.342])
    """
    for name, t in (("x", x), ("residual", residual)):
        _tensor("add_layer_norm", name, t)
    y, s, _, _ = bind(ADD_LAYER_NORM, x, residual, weight, bias, eps=float(eps))
    return y, s


def add_rms_norm(x, residual, weight=None, eps: float = 1e-6):
    """Residual add fused with the following RMS norm: returns ``(rms_norm(x + residual), x + residual)``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     y, s = ts.nn.add_rms_norm(ts.full((2, 4), 1.5), ts.full((2, 4), 0.5))
        >>> s[0, 0].item(), round(y[0, 0].item(), 4), y.shape
        (2.0, 1.0, (2, 4))
    """
    for name, t in (("x", x), ("residual", residual)):
        _tensor("add_rms_norm", name, t)
    y, s, _ = bind(ADD_RMS_NORM, x, residual, weight, None, eps=float(eps))
    return y, s


def rope_frequencies(seq_len: int, dim: int, base: float = 10000.0, *, device=None, dtype=None):
    """Rotary-embedding tables ``(cos, sin)``, each ``[seq_len, dim // 2]``.

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     cos, sin = ts.nn.rope_frequencies(16, 8)
        >>> cos.shape, float(cos[0, 0]), float(sin[0, 0])
        ((16, 4), 1.0, 0.0)
    """
    import torch

    from ..core.device import torch_device
    from ..dtypes import f32

    if dim % 2:
        raise TesseraValueError(f"ts.nn.rope_frequencies: dim must be even, got {dim}")
    dev = torch_device(device)
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=dev) / dim)
    angles = torch.arange(seq_len, dtype=torch.float64, device=dev)[:, None] * inv[None, :]
    d = dtype or f32
    return (Tensor._from_torch(torch.cos(angles).to(d.torch_dtype), d),
            Tensor._from_torch(torch.sin(angles).to(d.torch_dtype), d))


def rotary_embedding(x, cos, sin):
    """Rotate the last dim of ``x`` (``[..., S, D]``) by the angles of ``cos``/``sin`` (``[S, D//2]``),
    rotate-half (GPT-NeoX) layout; with fewer than ``D//2`` columns only that many pairs rotate.

    The tables are read in their own float dtype (f32 tables stay f32 for a bf16 ``x``).

    Example:
        >>> import tessera as ts
        >>> with ts.device("cpu"):
        ...     cos, sin = ts.nn.rope_frequencies(4, 8)
        ...     y = ts.nn.rotary_embedding(ts.ones(2, 4, 8), cos, sin)
        >>> y.shape, [round(v, 4) for v in y[0, 0].tolist()] == [1.0] * 8
        ((2, 4, 8), True)
    """
    for name, t in (("x", x), ("cos", cos), ("sin", sin)):
        _tensor("rotary_embedding", name, t)
    return bind(ROTARY, x, cos, sin, inverse=False)
