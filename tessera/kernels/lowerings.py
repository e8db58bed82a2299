"""Registers the Triton kernels as the CUDA lowerings of the core's primitives.

Imported by ``tessera`` when a CUDA GPU is present. Each adapter takes the primitive's
reference signature (torch tensors + attrs) and calls the kernel; each ``supports``
predicate says when the kernel applies — otherwise the registry falls back to the
reference with a one-time warning.

Example:
    >>> from tessera.core.primitive import registry
    >>> import tessera.kernels.lowerings  # doctest: +SKIP
    >>> sorted(registry["flash_attention"].lowerings)  # doctest: +SKIP
    ['cuda']
"""
from __future__ import annotations

import importlib
import warnings

import torch

from ..core.primitive import registry

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_MIN_KERNEL_DIM = 512


def _table(t):
    """A rotary table as the kernel reads it: fp32/fp16/bf16 as given, float64 as fp32 (tables are [S, R])."""
    return t if t.dtype in _FLOATS else t.float()


def _torch_dtype(dtype):
    """A Tessera dtype attribute (or None) as the kernels take it."""
    return None if dtype is None else dtype.torch_dtype


def _cuda(*ts) -> bool:
    return all(t is None or (t.is_cuda and t.dtype in _FLOATS) for t in ts if isinstance(t, torch.Tensor))


def _last(axis, x) -> bool:
    return axis in (-1, x.dim() - 1)


def _register_attention(ka):
    registry["flash_attention"].register_lowering(
        "cuda", lambda q, k, v, mask, **a: ka.flash_attention_fwd(q, k, v, mask, **a),
        supports=lambda q, k, v, mask, **a: ka.supports(q, k, v, mask, a["dropout_p"]), name="flash_attention_fwd")
    registry["flash_attention_bwd"].register_lowering(
        "cuda", lambda do, q, k, v, o, lse, mask, **a: ka.flash_attention_bwd(do, q, k, v, o, lse, mask, **a),
        supports=lambda do, q, k, v, o, lse, mask, **a: ka.supports(q, k, v, mask, a["dropout_p"]),
        name="flash_attention_bwd")

    def offsets(cu_q, cu_k, q):
        return cu_q.to(device=q.device, dtype=torch.int32), cu_k.to(device=q.device, dtype=torch.int32)

    def varlen_fwd(q, k, v, cu_q, cu_k, *, causal, scale, max_seqlen_q, max_seqlen_k):
        return ka.flash_attention_varlen_fwd(q, k, v, *offsets(cu_q, cu_k, q), max_seqlen_q, max_seqlen_k,
                                             causal=causal, scale=scale)

    def varlen_bwd(do, q, k, v, o, lse, cu_q, cu_k, *, causal, scale, max_seqlen_q, max_seqlen_k):
        return ka.flash_attention_varlen_bwd(do, q, k, v, o, lse, *offsets(cu_q, cu_k, q), max_seqlen_q,
                                             max_seqlen_k, causal=causal, scale=scale)

    registry["flash_attention_varlen"].register_lowering(
        "cuda", varlen_fwd, supports=lambda q, k, v, *_, **a: ka.supports(q, k, v), name="flash_attention_varlen_fwd")
    registry["flash_attention_varlen_bwd"].register_lowering(
        "cuda", varlen_bwd, supports=lambda do, q, k, v, *_, **a: ka.supports(q, k, v),
        name="flash_attention_varlen_bwd")


def _register_matmul(km):
    from .matmul.autotune import autotune_enabled

    def acc_dtype(accum):
        return torch.float16 if accum is not None and accum.name == "f16" else torch.float32

    def matmul(a, b, *, accum):
        return km.matmul(a, b, acc_dtype=acc_dtype(accum))

    def linear(x, w, bias, residual=None, *, activation, accum, out_dtype=None):
        out = km.matmul(x, w, bias=bias, activation=activation, residual=residual,
                        out_dtype=_torch_dtype(out_dtype),
                        return_preact=activation is not None, acc_dtype=acc_dtype(accum))
        return out if activation is not None else (out, None)

    # Measured on an H100: Tessera's GEMM is at 0.97-1.06x cuBLAS on large shapes and faster with a fused
    # epilogue, but untuned it loses at decode shapes; below that size the reference (cuBLAS) runs, unless
    # the tuner is on (TESSERA_AUTOTUNE=1): it times the own kernels against cuBLAS and records the choice.
    def large(a, b) -> bool:
        return min(a.shape[-2] if a.dim() > 1 else 1, a.shape[-1], b.shape[-1]) >= _MIN_KERNEL_DIM \
            or autotune_enabled()

    registry["matmul"].register_lowering(
        "cuda", matmul, supports=lambda a, b, **_: large(a, b) and km.supports(a, b), name="gemm",
        warn_on_fallback=False)
    def scaled_linear(x, w, x_scale, w_scale, bias, *, out_dtype):
        rows = x.shape[:-1]
        sx = x_scale.reshape(-1, 1) if x_scale.dim() else x_scale
        out = km.scaled_matmul(x.reshape(-1, x.shape[-1]), w, sx, w_scale, out_dtype=out_dtype.torch_dtype, bias=bias)
        return out.reshape(*rows, w.shape[1])

    def weight_only_linear(x, data, scales, bias, *, fmt, group_size, k, n):
        from ..quant import QuantizedWeight, get_format

        return km.wo_matmul(x, QuantizedWeight(data, scales, get_format(fmt), group_size, (k, n)), bias=bias)

    registry["weight_only_linear"].register_lowering(
        "cuda", weight_only_linear, name="weight-only gemm",
        supports=lambda x, *rest, **a: x.is_cuda and x.dtype in (torch.bfloat16, torch.float16))
    def fp8_training_linear(x, w, bias, *, out_dtype):
        (qx, sx), (qw, sw) = km.quantize_fp8(x), km.quantize_fp8(w)
        return scaled_linear(qx, qw, sx, sw, bias, out_dtype=out_dtype), qx, sx, qw, sw

    def fp8_ok(x, w, *rest, **a) -> bool:
        return x.is_cuda and min(x.numel() // x.shape[-1], *w.shape) >= 16

    registry["scaled_linear"].register_lowering("cuda", scaled_linear, name="fp8 gemm", supports=fp8_ok)
    registry["fp8_training_linear"].register_lowering(
        "cuda", fp8_training_linear, name="fp8 quantise + gemm",
        supports=lambda x, w, bias, **a: fp8_ok(x, w) and _cuda(x, w, bias))
    registry["linear"].register_lowering(
        "cuda", linear, name="gemm+epilogue", warn_on_fallback=False,
        supports=lambda x, w, bias, residual=None, **a: large(x.reshape(-1, x.shape[-1]), w)
        and km.supports(x, w, bias=bias, activation=a["activation"], residual=residual,
                        out_dtype=_torch_dtype(a.get("out_dtype"))))


def _register_membound(norms, softmax, act, dropout, emb, rotary):
    def stats(t, x):
        return t.reshape(x.shape[:-1])

    def layer_norm(x, weight, bias, *, eps):
        y, mean, rstd = norms.layer_norm_fwd(x, weight, bias, eps)
        return y, stats(mean, x), stats(rstd, x)

    def layer_norm_bwd(dy, x, weight, bias, mean, rstd, ds=None):
        if ds is None:
            return norms.layer_norm_bwd(dy, x, weight, bias, mean.reshape(-1), rstd.reshape(-1))
        return norms.add_layer_norm_bwd(dy, ds.to(x.dtype), x, weight, bias, mean.reshape(-1), rstd.reshape(-1))

    def rms_norm(x, weight, *, eps):
        y, rstd = norms.rms_norm_fwd(x, weight, eps)
        return y, stats(rstd, x)

    def rms_norm_bwd(dy, x, weight, rstd, ds=None):
        if ds is None:
            return norms.rms_norm_bwd(dy, x, weight, rstd.reshape(-1))
        return norms.add_rms_norm_bwd(dy, ds.to(x.dtype), x, weight, rstd.reshape(-1))

    def sm(x, *, axis, log):
        return (softmax.log_softmax_fwd if log else softmax.softmax_fwd)(x)

    def sm_bwd(dy, y, *, axis, log):
        return (softmax.log_softmax_bwd if log else softmax.softmax_bwd)(dy, y)

    def activation(x, *, kind):
        return act.silu_fwd(x) if kind == "silu" else act.gelu_fwd(x, "tanh" if kind == "gelu_tanh" else "none")

    def activation_bwd(dy, x, *, kind):
        return act.silu_bwd(dy, x) if kind == "silu" else act.gelu_bwd(dy, x, "tanh" if kind == "gelu_tanh" else "none")

    def add_layer_norm(x, residual, weight, bias, *, eps):
        y, s, mean, rstd = norms.add_layer_norm_fwd(x, residual, weight, bias, eps)
        return y, s, stats(mean, x), stats(rstd, x)

    def add_rms_norm(x, residual, weight, bias, *, eps):
        y, s, rstd = norms.add_rms_norm_fwd(x, residual, weight, eps)
        return y, s, stats(rstd, x)

    plain = lambda *ts, **_: _cuda(*ts)  # noqa: E731
    registry["layer_norm"].register_lowering("cuda", layer_norm, supports=plain, name="layer_norm_fwd")
    registry["layer_norm_bwd"].register_lowering("cuda", layer_norm_bwd, supports=plain, name="layer_norm_bwd")
    registry["rms_norm"].register_lowering("cuda", rms_norm, supports=plain, name="rms_norm_fwd")
    registry["rms_norm_bwd"].register_lowering("cuda", rms_norm_bwd, supports=plain, name="rms_norm_bwd")
    registry["softmax"].register_lowering("cuda", sm, supports=lambda x, *, axis, log: _cuda(x) and _last(axis, x),
                                          name="softmax_fwd")
    registry["softmax_bwd"].register_lowering(
        "cuda", sm_bwd, supports=lambda dy, y, *, axis, log: _cuda(dy, y) and _last(axis, y), name="softmax_bwd")
    registry["activation"].register_lowering("cuda", activation, supports=plain, name="activation_fwd")
    registry["activation_bwd"].register_lowering("cuda", activation_bwd, supports=plain, name="activation_bwd")
    registry["dropout"].register_lowering(
        "cuda", lambda x, *, p, seed: dropout.dropout_fwd(x.contiguous(), p, seed), supports=plain, name="dropout_fwd")
    registry["swiglu"].register_lowering("cuda", act.swiglu_fwd, supports=plain, name="swiglu_fwd")
    registry["swiglu_bwd"].register_lowering("cuda", act.swiglu_bwd, supports=plain, name="swiglu_bwd")

    def rotate(x, cos, sin, *, inverse=False):
        cos, sin = _table(cos), _table(sin)
        return rotary.rotary_bwd(x, cos, sin) if inverse else rotary.rotary_fwd(x, cos, sin)

    registry["rotary"].register_lowering(
        "cuda", rotate, name="rotary_fwd/rotary_bwd",
        supports=lambda x, cos, sin, **_: _cuda(x) and all(t.is_cuda and t.dtype.is_floating_point for t in (cos, sin)))
    registry["add_layer_norm"].register_lowering("cuda", add_layer_norm, supports=plain, name="add_layer_norm_fwd")
    registry["add_rms_norm"].register_lowering("cuda", add_rms_norm, supports=plain, name="add_rms_norm_fwd")
    registry["take_grad"].register_lowering(
        "cuda", lambda ct, idx, *, axis, size: emb.embedding_bwd(ct, idx, int(size)),
        supports=lambda ct, idx, *, axis, size: axis == 0 and _cuda(ct), name="embedding_bwd")


def _linear_ce_supports(h, w, bias, targets, **_) -> bool:
    """The chunked kernel: fp32/fp16/bf16 ``h``/``w`` of one dtype on one GPU, a bias in that dtype, integer targets."""
    return (_cuda(h, w, bias) and w.dtype == h.dtype and w.shape[1] > 0
            and (bias is None or bias.dtype == h.dtype)
            and targets.device == h.device and targets.dtype in (torch.int64, torch.int32, torch.int16, torch.int8,
                                                                 torch.uint8))


def _register_cross_entropy(kc):
    def linear_ce(h, w, bias, targets, *, ignore_index, label_smoothing, reduction, chunk, z_loss=0.0):
        return kc.linear_cross_entropy(h, w, targets, bias=bias, ignore_index=ignore_index,
                                       label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
                                       chunk_size=chunk)

    registry["linear_cross_entropy"].register_lowering("cuda", linear_ce, supports=_linear_ce_supports,
                                                       name="linear_cross_entropy (chunked)")
    registry["cross_entropy"].register_lowering(
        "cuda", lambda logits, targets, **a: kc.cross_entropy_fwd(logits, targets, **a),
        supports=lambda logits, targets, **a: kc.supports(logits, targets), name="cross_entropy_fwd")
    registry["cross_entropy_bwd"].register_lowering(
        "cuda", lambda dloss, dlogits, *, reduction: kc.cross_entropy_bwd(dloss, dlogits, reduction),
        supports=lambda dloss, dlogits, **a: _cuda(dlogits), name="cross_entropy_bwd")


_FAMILIES = [
    (_register_attention, ["tessera.kernels.attention"]),
    (_register_matmul, ["tessera.kernels.matmul"]),
    (_register_membound, ["tessera.kernels.norms", "tessera.kernels.softmax", "tessera.kernels.activations",
                          "tessera.kernels.dropout", "tessera.kernels.embedding", "tessera.kernels.rotary"]),
    (_register_cross_entropy, ["tessera.kernels.cross_entropy"]),
]


def register_all() -> list:
    """Register every kernel family that imports; returns the names of those that did not."""
    failed = []
    for register, modules in _FAMILIES:
        try:
            register(*[importlib.import_module(m) for m in modules])
        except Exception as exc:  # a broken kernel package must not break the reference path
            failed.append(modules[0])
            warnings.warn(f"tessera: kernels in {modules[0]} are unavailable ({type(exc).__name__}: {exc}); "
                          "the reference implementations will be used", stacklevel=2)
    return failed


register_all()
