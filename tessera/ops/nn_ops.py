"""Neural-network primitives with fused semantics and kernel slots.

Each forward returns what its backward needs (statistics, the log-sum-exp, the
gradient of a loss) as by-product outputs, and each backward is a primitive of its own,
so that ``tessera/kernels`` can register a fast lowering for either side. Backward
primitives differentiate through their ``decompose`` (written with Tessera ops).

Example:
    >>> import tessera as ts
    >>> with ts.device("cpu"):
    ...     y = ts.nn.softmax(ts.tensor([[1.0, 1.0]]))
    >>> y.tolist()
    [[0.5, 0.5]]
"""
from __future__ import annotations

import math
import weakref

import torch
import torch.nn.functional as F

from .. import dtypes as dt
from ..core.dispatch import bind, tape_state
from ..core.primitive import Aval, Primitive
from ..errors import TesseraDTypeError, TesseraShapeError, TesseraValueError
from ..runtime.checks import may_read_values
from ..runtime.philox import dropout_keep_mask
from ..types.dims import Dim
from .attention_reference import attention_bwd_reference, attention_mask, attention_reference
from .rules import broadcast_shapes, normalize_axis, require_float, require_same_dtype, shape_str


def _acc(x: torch.Tensor) -> torch.Tensor:
    return x.double() if x.dtype == torch.float64 else x.float()


class Decomposed(Primitive):
    """A primitive whose VJP comes from autodiff of ``decompose`` (a Tessera-op version)."""

    def decompose(self, *args, **attrs):
        from ..errors import TesseraAutodiffError

        raise TesseraAutodiffError(f"{self.name} has no decomposition, so it cannot be differentiated")

    def vjp(self, cts, ins, outs, **attrs):
        from ..core.autodiff import vjp_by_decomposition

        return vjp_by_decomposition(self, cts, ins, attrs)


# ------------------------------------------------------------------------ layer norm
def _check_norm(op, x, weight, bias):
    require_float(op, x)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and (p.ndim != 1 or not (p.shape[0] == x.shape[-1])):
            raise TesseraShapeError(f"{op}: {name} has shape {shape_str(p.shape)} but x has shape {shape_str(x.shape)}; "
                                    f"{name} must be ({x.shape[-1]},), the size of x's last dim")


def _stats_shape(x):
    return tuple(x.shape[:-1])


class LayerNorm(Primitive):
    name = "layer_norm"
    attrs = (("eps", 1e-5),)
    multiple_results = True
    nondiff_outputs = (1, 2)

    def shape(self, x, weight, bias, *, eps):
        _check_norm("layer_norm", x, weight, bias)
        stats = Aval(_stats_shape(x), dt.f64 if x.dtype == dt.f64 else dt.f32)
        return Aval(x.shape, x.dtype), stats, stats

    def reference(self, x, weight, bias, *, eps):
        xf = _acc(x)
        mean = xf.mean(-1)
        rstd = torch.rsqrt(xf.var(-1, unbiased=False) + eps)
        y = (xf - mean[..., None]) * rstd[..., None]
        if weight is not None:
            y = y * _acc(weight)
        if bias is not None:
            y = y + _acc(bias)
        return y.to(x.dtype), mean, rstd

    def vjp(self, cts, ins, outs, *, eps):
        x, weight, bias = ins
        return bind(LAYER_NORM_BWD, cts[0], x, weight, bias, outs[1], outs[2])


def _check_residual_ct(op, x, ds) -> None:
    if ds is not None and (ds.ndim != x.ndim or not all(a == b for a, b in zip(ds.shape, x.shape))):
        raise TesseraShapeError(f"{op}: ds (the residual stream's cotangent) has shape {shape_str(ds.shape)} but x "
                                f"has {shape_str(x.shape)}; pass the cotangent of the add-norm's sum output")


def _plus_residual_ct(dx, x, ds):
    """``dx`` rounded to x's dtype, plus the residual stream's cotangent ``ds`` when there is one."""
    dx = dx.to(x.dtype)
    return dx if ds is None else (dx + ds).to(x.dtype)


class LayerNormBwd(Decomposed):
    """Gradients (dx, dweight, dbias) of layer_norm; with ``ds`` (the cotangent of the sum output of
    ``add_layer_norm``) it is the add-norm backward: ``dx + ds`` in the same pass."""

    name = "layer_norm_bwd"
    multiple_results = True

    def shape(self, dy, x, weight, bias, mean, rstd, ds=None):
        _check_residual_ct("layer_norm_bwd", x, ds)
        return Aval(x.shape, x.dtype), (weight and Aval(weight.shape, weight.dtype)), (bias and Aval(bias.shape, bias.dtype))

    def reference(self, dy, x, weight, bias, mean, rstd, ds=None):
        xhat = (_acc(x) - mean[..., None]) * rstd[..., None]
        g = _acc(dy) * (_acc(weight) if weight is not None else 1.0)
        n = x.shape[-1]
        dx = rstd[..., None] * (g - g.sum(-1, keepdim=True) / n - xhat * (g * xhat).sum(-1, keepdim=True) / n)
        rows = tuple(range(x.dim() - 1))
        dw = (_acc(dy) * xhat).sum(rows).to(weight.dtype) if weight is not None else None
        db = _acc(dy).sum(rows).to(bias.dtype) if bias is not None else None
        return _plus_residual_ct(dx, x, ds), dw, db

    def decompose(self, dy, x, weight, bias, mean, rstd, ds=None):
        from . import api as ts

        xhat = (x - mean.reshape(*mean.shape, 1)) * rstd.reshape(*rstd.shape, 1)
        g = dy * weight if weight is not None else dy
        dx = rstd.reshape(*rstd.shape, 1) * (g - ts.mean(g, -1, True) - xhat * ts.mean(g * xhat, -1, True))
        rows = tuple(range(x.ndim - 1))
        dx = dx if ds is None else dx + ds
        return dx, (ts.sum(dy * xhat, rows) if weight is not None else None), (ts.sum(dy, rows) if bias is not None else None)


# ------------------------------------------------------------------------ rms norm
class RmsNorm(Primitive):
    name = "rms_norm"
    attrs = (("eps", 1e-6),)
    multiple_results = True
    nondiff_outputs = (1,)

    def shape(self, x, weight, *, eps):
        _check_norm("rms_norm", x, weight, None)
        return Aval(x.shape, x.dtype), Aval(_stats_shape(x), dt.f64 if x.dtype == dt.f64 else dt.f32)

    def reference(self, x, weight, *, eps):
        xf = _acc(x)
        rstd = torch.rsqrt((xf * xf).mean(-1) + eps)
        y = xf * rstd[..., None]
        if weight is not None:
            y = y * _acc(weight)
        return y.to(x.dtype), rstd

    def vjp(self, cts, ins, outs, *, eps):
        x, weight = ins
        return bind(RMS_NORM_BWD, cts[0], x, weight, outs[1])


class RmsNormBwd(Decomposed):
    """Gradients (dx, dweight) of rms_norm; with ``ds`` it is the ``add_rms_norm`` backward (``dx + ds``)."""

    name = "rms_norm_bwd"
    multiple_results = True

    def shape(self, dy, x, weight, rstd, ds=None):
        _check_residual_ct("rms_norm_bwd", x, ds)
        return Aval(x.shape, x.dtype), (weight and Aval(weight.shape, weight.dtype))

    def reference(self, dy, x, weight, rstd, ds=None):
        xhat = _acc(x) * rstd[..., None]
        g = _acc(dy) * (_acc(weight) if weight is not None else 1.0)
        dx = rstd[..., None] * (g - xhat * (g * xhat).mean(-1, keepdim=True))
        dw = (_acc(dy) * xhat).sum(tuple(range(x.dim() - 1))).to(weight.dtype) if weight is not None else None
        return _plus_residual_ct(dx, x, ds), dw

    def decompose(self, dy, x, weight, rstd, ds=None):
        from . import api as ts

        r = rstd.reshape(*rstd.shape, 1)
        xhat = x * r
        g = dy * weight if weight is not None else dy
        dx = r * (g - xhat * ts.mean(g * xhat, -1, True))
        dx = dx if ds is None else dx + ds
        return dx, (ts.sum(dy * xhat, tuple(range(x.ndim - 1))) if weight is not None else None)


# ------------------------------------------------------------------------ softmax
class Softmax(Primitive):
    name = "softmax"
    attrs = (("axis", -1), ("log", False))

    def shape(self, x, *, axis, log):
        require_float("log_softmax" if log else "softmax", x)
        normalize_axis("softmax", axis, x.ndim)
        return Aval(x.shape, x.dtype)

    def reference(self, x, *, axis, log):
        fn = torch.log_softmax if log else torch.softmax
        return fn(_acc(x), dim=axis).to(x.dtype)

    def vjp(self, cts, ins, outs, *, axis, log):
        return (bind(SOFTMAX_BWD, cts[0], outs[0], axis=axis, log=log),)


class SoftmaxBwd(Decomposed):
    name = "softmax_bwd"
    attrs = (("axis", -1), ("log", False))

    def shape(self, dy, y, *, axis, log):
        return Aval(y.shape, y.dtype)

    def reference(self, dy, y, *, axis, log):
        dyf, yf = _acc(dy), _acc(y)
        if log:
            return (dyf - torch.exp(yf) * dyf.sum(axis, keepdim=True)).to(y.dtype)
        return (yf * (dyf - (dyf * yf).sum(axis, keepdim=True))).to(y.dtype)

    def decompose(self, dy, y, *, axis, log):
        from . import api as ts

        if log:
            return dy - ts.exp(y) * ts.sum(dy, axis, True)
        return y * (dy - ts.sum(dy * y, axis, True))


# ------------------------------------------------------------------------ activations
def _gelu_grad_ref(x, approximate):
    if approximate == "tanh":
        k = math.sqrt(2.0 / math.pi)
        inner = k * (x + 0.044715 * x ** 3)
        t = torch.tanh(inner)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2.0)))
    return cdf + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


class Activation(Primitive):
    """``gelu`` (exact or tanh), ``silu``: elementwise, with a backward primitive each."""

    name = "activation"
    attrs = (("kind", "gelu"),)

    def shape(self, x, *, kind):
        require_float(kind, x)
        return Aval(x.shape, x.dtype)

    def reference(self, x, *, kind):
        xf = _acc(x)
        if kind == "silu":
            y = F.silu(xf)
        else:
            y = F.gelu(xf, approximate="tanh" if kind == "gelu_tanh" else "none")
        return y.to(x.dtype)

    def vjp(self, cts, ins, outs, *, kind):
        return (bind(ACTIVATION_BWD, cts[0], ins[0], kind=kind),)


class ActivationBwd(Decomposed):
    name = "activation_bwd"
    attrs = (("kind", "gelu"),)

    def shape(self, dy, x, *, kind):
        return Aval(x.shape, x.dtype)

    def reference(self, dy, x, *, kind):
        xf = _acc(x)
        if kind == "silu":
            s = torch.sigmoid(xf)
            d = s * (1 + xf * (1 - s))
        else:
            d = _gelu_grad_ref(xf, "tanh" if kind == "gelu_tanh" else "none")
        return (_acc(dy) * d).to(x.dtype)

    def decompose(self, dy, x, *, kind):
        from . import api as ts

        if kind == "silu":
            s = ts.sigmoid(x)
            return dy * s * (1.0 + x * (1.0 - s))
        if kind == "gelu_tanh":
            k = math.sqrt(2.0 / math.pi)
            t = ts.tanh(k * (x + 0.044715 * x * x * x))
            return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x))
        cdf = 0.5 * (1.0 + ts.erf(x * (1 / math.sqrt(2.0))))
        return dy * (cdf + x * ts.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi)))


def activation_grad(ct, preact, activation):
    """The cotangent of a pre-activation from that of the activation's output."""
    from .elementwise import where

    if activation == "relu":
        return where(preact > 0, ct, 0.0)
    return bind(ACTIVATION_BWD, ct, preact, kind=activation)


# ------------------------------------------------------------------------ dropout
class Dropout(Primitive):
    """Philox dropout: element i kept when ``uniform(seed, i) >= p``; the same mask in the backward."""

    name = "dropout"
    attrs = (("p", 0.0), ("seed", 0))

    def shape(self, x, *, p, seed):
        require_float("dropout", x)
        return Aval(x.shape, x.dtype)

    def reference(self, x, *, p, seed):
        if p == 0.0:
            return x.clone()
        keep = dropout_keep_mask(seed, x.shape, p, device=x.device)
        return (torch.where(keep, _acc(x) / (1.0 - p), 0.0)).to(x.dtype)

    def vjp(self, cts, ins, outs, *, p, seed):
        return (bind(DROPOUT, cts[0], p=p, seed=seed),)


# ------------------------------------------------------------------------ cross entropy
# dlogits buffers whose backward ran (the CUDA backward scales them in place): id -> weak reference
_CONSUMED: dict = {}


def _targets_in_range(t: torch.Tensor, valid: torch.Tensor, V: int) -> None:
    if not may_read_values(t):
        return
    bad = valid & ((t < 0) | (t >= V))
    if bool(bad.any()):
        value = int(t[bad][0])
        raise TesseraValueError(f"cross_entropy: target {value} is outside [0, {V}) (the classes of logits' last dim) "
                                "and is not ignore_index; fix the labels or set ignore_index")


def _check_ce_options(op, reduction, label_smoothing, z_loss) -> None:
    if reduction not in ("mean", "sum", "none"):
        raise TesseraValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise TesseraValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    if not 0.0 <= z_loss < float("inf"):
        raise TesseraValueError(f"{op}: z_loss must be a finite weight >= 0, got {z_loss}")


def _check_targets_dtype(op, targets) -> None:
    if targets.dtype.kind not in ("int", "uint"):
        raise TesseraDTypeError(f"{op}: targets must be integer class ids, got {targets.dtype.name}; "
                                "use targets.to(ts.int64)")


class CrossEntropy(Primitive):
    """Loss and d(loss)/d(logits) in one pass; the gradient is a by-product used by the backward."""

    name = "cross_entropy"
    attrs = (("ignore_index", -100), ("label_smoothing", 0.0), ("z_loss", 0.0), ("reduction", "mean"),
             ("compute_grad", True))
    multiple_results = True
    nondiff_outputs = (1,)

    def shape(self, logits, targets, *, ignore_index, label_smoothing, z_loss, reduction, compute_grad):
        require_float("cross_entropy", logits, "logits")
        _check_targets_dtype("cross_entropy", targets)
        if logits.ndim < 1 or len(targets.shape) != logits.ndim - 1 or not all(
                a == b for a, b in zip(targets.shape, logits.shape[:-1])):
            raise TesseraShapeError(f"cross_entropy: logits have shape {shape_str(logits.shape)} (classes in the last dim), "
                                    f"so targets must have shape {shape_str(logits.shape[:-1])}, but they have "
                                    f"{shape_str(targets.shape)}")
        _check_ce_options("cross_entropy", reduction, label_smoothing, z_loss)
        loss_dtype = dt.f64 if logits.dtype == dt.f64 else dt.f32
        loss = Aval(() if reduction != "none" else tuple(targets.shape), loss_dtype)
        return loss, Aval(logits.shape, logits.dtype)

    def reference(self, logits, targets, *, ignore_index, label_smoothing, z_loss, reduction, compute_grad):
        V = logits.shape[-1]
        lf = _acc(logits).reshape(-1, V)
        t = targets.reshape(-1).long()
        valid = t != ignore_index
        _targets_in_range(t, valid, V)
        t_safe = torch.where(valid, t, 0)
        lse = torch.logsumexp(lf, -1)
        nll = lse - lf.gather(1, t_safe[:, None])[:, 0]
        loss = (1 - label_smoothing) * nll + label_smoothing * (lse - lf.mean(-1)) + z_loss * lse * lse
        loss = torch.where(valid, loss, 0.0)
        count = valid.sum().clamp(min=1).to(lf.dtype)
        grad = None
        if compute_grad:
            p = torch.softmax(lf, -1)
            g = p * (1 + 2 * z_loss * lse[:, None]) - label_smoothing / V
            g.scatter_add_(1, t_safe[:, None], torch.full_like(g[:, :1], -(1 - label_smoothing)))
            g = torch.where(valid[:, None], g, 0.0)
            if reduction == "mean":
                g = g / count
            grad = g.reshape(logits.shape).to(logits.dtype)
        if reduction == "mean":
            out = loss.sum() / count
        elif reduction == "sum":
            out = loss.sum()
        else:
            out = loss.reshape(targets.shape)
        return out, grad

    def vjp(self, cts, ins, outs, *, ignore_index, label_smoothing, z_loss, reduction, compute_grad):
        from ..errors import TesseraAutodiffError

        if outs[1] is None:
            raise TesseraAutodiffError("cross_entropy was computed without a tape, so its gradient was not kept; "
                                       "compute the loss inside @ts.function or ts.grad(f)")
        seen = _CONSUMED.get(id(outs[1]))
        if seen is not None and seen() is outs[1]:
            raise TesseraAutodiffError("the gradient through this cross_entropy was already taken: its backward "
                                       "reuses the forward's buffer, so take one ts.grad per loss (pass every "
                                       "tensor you need in one wrt list/dict)")
        key = id(outs[1])
        _CONSUMED[key] = weakref.ref(outs[1], lambda _, key=key: _CONSUMED.pop(key, None))
        return bind(CROSS_ENTROPY_BWD, cts[0], outs[1], reduction=reduction), None


class CrossEntropyBwd(Decomposed):
    name = "cross_entropy_bwd"
    attrs = (("reduction", "mean"),)

    def shape(self, dloss, dlogits, *, reduction):
        return Aval(dlogits.shape, dlogits.dtype)

    def reference(self, dloss, dlogits, *, reduction):
        scale = dloss[..., None] if reduction == "none" else dloss
        return (_acc(dlogits) * scale).to(dlogits.dtype)

    def decompose(self, dloss, dlogits, *, reduction):
        return dlogits * (dloss.reshape(*dloss.shape, 1) if reduction == "none" else dloss)


# ------------------------------------------------------------------------ attention
def _check_mask_dtype(mask) -> None:
    if mask.dtype.kind != "bool" and not mask.dtype.is_floating:
        raise TesseraDTypeError(
            f"flash_attention: mask is {mask.dtype.name}; it must be bool (True = may attend) or float (added to "
            "the scores). For a 0/1 keep/drop mask such as an integer attention_mask, pass mask.to(ts.bool_)")


def check_qkv(op: str, q, k, v, rank: int, dims: str) -> None:
    """The checks every attention op makes of q, k, v: ``rank`` dims (named by ``dims``, e.g.
    "[B, H, S, D]"), float dtypes, one dtype for all three, and k shaped like v."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.ndim != rank:
            raise TesseraShapeError(f"{op}: {name} must be {rank}-D {dims}, got shape {shape_str(t.shape)}")
        require_float(op, t, name)
    if not all(a == b for a, b in zip(k.shape, v.shape)):
        raise TesseraShapeError(f"{op}: k has shape {shape_str(k.shape)} but v has {shape_str(v.shape)}; they must match")
    if q.dtype.storage != k.dtype.storage or q.dtype.storage != v.dtype.storage:
        raise TesseraDTypeError(f"{op}: q, k, v are {q.dtype.name}, {k.dtype.name}, {v.dtype.name}; "
                                f"convert them to one dtype, e.g. k.to(ts.{q.dtype.name})")


def _check_attention(q, k, v, mask):
    check_qkv("flash_attention", q, k, v, 4, "[B, H, S, D]")
    if not (q.shape[0] == k.shape[0]) or not (q.shape[3] == k.shape[3]):
        raise TesseraShapeError(f"flash_attention: q has shape {shape_str(q.shape)} and k has {shape_str(k.shape)}; "
                                "batch (dim 0) and head dim (dim 3) must match")
    H, Hkv = q.shape[1], k.shape[1]
    if not (Dim.of(H) % Dim.of(Hkv) == 0):
        raise TesseraShapeError(f"flash_attention: q has {H} heads and k/v have {Hkv}; the query heads must be a "
                                "multiple of the key/value heads (grouped-query attention)")
    if mask is not None:
        _check_mask_dtype(mask)
        if mask.ndim > 4:
            raise TesseraShapeError(f"flash_attention: mask has rank {mask.ndim}; it must broadcast to [B, H, Sq, Sk]")
        broadcast_shapes("flash_attention (mask)", mask.shape, (q.shape[0], H, q.shape[2], k.shape[2]),
                         names=("mask", "[B, H, Sq, Sk]"))


class FlashAttention(Primitive):
    name = "flash_attention"
    attrs = (("causal", False), ("scale", None), ("dropout_p", 0.0), ("seed", 0))
    multiple_results = True
    nondiff_outputs = (1,)

    def shape(self, q, k, v, mask, *, causal, scale, dropout_p, seed):
        _check_attention(q, k, v, mask)
        return Aval(q.shape, q.dtype), Aval(tuple(q.shape[:3]), dt.f64 if q.dtype == dt.f64 else dt.f32)

    def reference(self, q, k, v, mask, *, causal, scale, dropout_p, seed):
        return attention_reference(q, k, v, mask, causal=causal, scale=scale, dropout_p=dropout_p, seed=seed)

    def vjp(self, cts, ins, outs, **attrs):
        q, k, v, mask = ins
        dq, dk, dv = bind(FLASH_ATTENTION_BWD, cts[0], q, k, v, outs[0], outs[1], mask, **attrs)
        return dq, dk, dv, None


class FlashAttentionBwd(Decomposed):
    name = "flash_attention_bwd"
    attrs = FlashAttention.attrs
    multiple_results = True

    def shape(self, do, q, k, v, o, lse, mask, **attrs):
        return Aval(q.shape, q.dtype), Aval(k.shape, k.dtype), Aval(v.shape, v.dtype)

    def reference(self, do, q, k, v, o, lse, mask, **attrs):
        return attention_bwd_reference(do, q, k, v, o, lse, mask, **attrs)

    def decompose(self, do, q, k, v, o, lse, mask, *, causal, scale, dropout_p, seed):
        from . import api as ts

        if dropout_p:
            from ..errors import TesseraAutodiffError

            raise TesseraAutodiffError("second derivatives of attention with dropout are not supported")
        B, H, Sq, D = q.shape
        Hkv, Sk = k.shape[1], k.shape[2]
        g = H // Hkv
        sc = 1.0 / math.sqrt(int(D)) if scale is None else scale
        kk = ts.reshape(ts.broadcast_to(ts.reshape(k, B, Hkv, 1, Sk, D), B, Hkv, g, Sk, D), B, H, Sk, D)
        vv = ts.reshape(ts.broadcast_to(ts.reshape(v, B, Hkv, 1, Sk, D), B, Hkv, g, Sk, D), B, H, Sk, D)
        s = ts.matmul(q, ts.transpose(kk, -1, -2)) * sc
        allowed, bias = attention_mask(int(Sq), int(Sk), causal, None if mask is None else mask.torch(), q.torch().device)
        from ..core.tensor import Tensor

        allowed_t = Tensor._from_torch(allowed)
        if bias is not None:
            s = s + Tensor._from_torch(bias.to(q.torch().dtype))
        # recomputed from q, k, v (o and lse are only a cache of these), so this is the exact derivative
        p = ts.where(allowed_t, bind(SOFTMAX, ts.where(allowed_t, s, -1e30), axis=3, log=False), 0.0)
        o = ts.matmul(p, vv)
        dp = ts.matmul(do, ts.transpose(vv, -1, -2))
        delta = ts.sum(do * o, -1, True)
        ds = p * (dp - delta)
        dq = ts.matmul(ds, kk) * sc
        dk = ts.sum(ts.reshape(ts.matmul(ts.transpose(ds, -1, -2), q) * sc, B, Hkv, g, Sk, D), 2)
        dv = ts.sum(ts.reshape(ts.matmul(ts.transpose(p, -1, -2), do), B, Hkv, g, Sk, D), 2)
        return dq, dk, dv


LAYER_NORM, LAYER_NORM_BWD = LayerNorm(), LayerNormBwd()
RMS_NORM, RMS_NORM_BWD = RmsNorm(), RmsNormBwd()
SOFTMAX, SOFTMAX_BWD = Softmax(), SoftmaxBwd()
ACTIVATION, ACTIVATION_BWD = Activation(), ActivationBwd()
DROPOUT = Dropout()
CROSS_ENTROPY, CROSS_ENTROPY_BWD = CrossEntropy(), CrossEntropyBwd()
FLASH_ATTENTION, FLASH_ATTENTION_BWD = FlashAttention(), FlashAttentionBwd()


def recording_now() -> bool:
    """Whether a tape is recording (forward ops then keep what their backward needs)."""
    return tape_state.depth > 0


# ------------------------------------------------------------------------ linear cross entropy
class LinearCrossEntropy(Primitive):
    """Cross-entropy of ``h @ w (+ bias)`` and its gradients, chunked over tokens: the full
    ``[N, V]`` logits never exist. Outputs (loss, dh, dw, dbias) — the gradients are by-products."""

    name = "linear_cross_entropy"
    attrs = (("ignore_index", -100), ("label_smoothing", 0.0), ("reduction", "mean"), ("chunk", 4096),
             ("z_loss", 0.0))
    multiple_results = True
    nondiff_outputs = (1, 2, 3)

    def shape(self, h, w, bias, targets, *, ignore_index, label_smoothing, reduction, chunk, z_loss=0.0):
        op = "linear_cross_entropy"
        if h.ndim != 2 or w.ndim != 2 or not (h.shape[1] == w.shape[0]):
            raise TesseraShapeError(f"{op}: h must be [N, D] and w [D, V] (laid out [in, out]); got "
                                    f"h {shape_str(h.shape)} and w {shape_str(w.shape)}")
        if len(targets.shape) != 1 or not (targets.shape[0] == h.shape[0]):
            raise TesseraShapeError(f"{op}: targets must have shape ({h.shape[0]},), got {shape_str(targets.shape)}")
        if bias is not None and (bias.ndim != 1 or not (bias.shape[0] == w.shape[1])):
            raise TesseraShapeError(f"{op}: bias has shape {shape_str(bias.shape)} but w is {shape_str(w.shape)}; "
                                    f"bias must be ({w.shape[1]},), one value per class")
        require_float(op, h, "h")
        require_same_dtype(op, h, "h", w, "w")
        _check_targets_dtype(op, targets)
        _check_ce_options(op, reduction, label_smoothing, z_loss)
        loss = Aval(() if reduction != "none" else (h.shape[0],), dt.f64 if h.dtype == dt.f64 else dt.f32)
        return loss, Aval(h.shape, h.dtype), Aval(w.shape, w.dtype), (bias and Aval(bias.shape, bias.dtype))

    def reference(self, h, w, bias, targets, *, ignore_index, label_smoothing, reduction, chunk, z_loss=0.0):
        acc = torch.float64 if h.dtype == torch.float64 else torch.float32
        N, V = h.shape[0], w.shape[1]
        t = targets.long()
        valid = t != ignore_index
        _targets_in_range(t, valid, V)
        count = valid.sum().clamp(min=1).to(acc) if reduction == "mean" else None
        wf = w.to(acc)
        dh = torch.empty(h.shape, dtype=acc, device=h.device)
        dw = torch.zeros(w.shape, dtype=acc, device=h.device)
        db = torch.zeros(V, dtype=acc, device=h.device) if bias is not None else None
        losses = torch.empty(N, dtype=acc, device=h.device)
        ce = CROSS_ENTROPY.reference
        for s in range(0, N, chunk):
            hc = h[s:s + chunk].to(acc)
            logits = hc @ wf + (bias.to(acc) if bias is not None else 0.0)
            loss_c, g = ce(logits, t[s:s + chunk], ignore_index=ignore_index, label_smoothing=label_smoothing,
                           z_loss=z_loss, reduction="none", compute_grad=True)
            if count is not None:
                g = g / count
            losses[s:s + chunk] = loss_c
            dh[s:s + chunk] = g @ wf.T
            dw += hc.T @ g
            if db is not None:
                db += g.sum(0)
        loss = losses.sum() / count if reduction == "mean" else (losses.sum() if reduction == "sum" else losses)
        return (loss, dh.to(h.dtype), dw.to(w.dtype), None if db is None else db.to(bias.dtype))

    def vjp(self, cts, ins, outs, **attrs):
        ct = cts[0]
        if attrs["reduction"] == "none":
            from ..errors import TesseraAutodiffError

            raise TesseraAutodiffError("linear_cross_entropy: differentiate a reduced loss (reduction='mean' or 'sum')")
        dh, dw, db = outs[1] * ct, outs[2] * ct, (None if outs[3] is None else outs[3] * ct)
        return dh, dw, db, None


LINEAR_CROSS_ENTROPY = LinearCrossEntropy()


# ------------------------------------------------------------------------ swiglu, rotary, add + norm
class Swiglu(Primitive):
    name = "swiglu"

    def shape(self, gate, up):
        require_float("swiglu", gate, "gate")
        require_same_dtype("swiglu", gate, "gate", up, "up")
        if tuple(gate.shape) != tuple(up.shape) and not all(a == b for a, b in zip(gate.shape, up.shape)):
            raise TesseraShapeError(f"swiglu: gate has shape {shape_str(gate.shape)} but up has {shape_str(up.shape)}; "
                                    "they must match")
        return Aval(gate.shape, gate.dtype)

    def reference(self, gate, up):
        return (F.silu(_acc(gate)) * _acc(up)).to(gate.dtype)

    def vjp(self, cts, ins, outs):
        return bind(SWIGLU_BWD, cts[0], ins[0], ins[1])


class SwigluBwd(Decomposed):
    name = "swiglu_bwd"
    multiple_results = True

    def shape(self, dy, gate, up):
        return Aval(gate.shape, gate.dtype), Aval(up.shape, up.dtype)

    def reference(self, dy, gate, up):
        g, u, d = _acc(gate), _acc(up), _acc(dy)
        s = torch.sigmoid(g)
        return (d * u * s * (1 + g * (1 - s))).to(gate.dtype), (d * g * s).to(up.dtype)

    def decompose(self, dy, gate, up):
        from . import api as ts

        s = ts.sigmoid(gate)
        return dy * up * s * (1.0 + gate * (1.0 - s)), dy * gate * s


class Rotary(Primitive):
    """Rotate-half rotary embedding of the last dim of ``x [..., S, D]`` by ``cos``/``sin`` ``[S, R]``
    (R <= D/2 pairs rotate; the rest passes through). ``inverse=True`` rotates by the opposite angle
    (the backward of the rotation). The tables keep their own float dtype."""

    name = "rotary"
    attrs = (("inverse", False),)

    def shape(self, x, cos, sin, *, inverse=False):
        op = "rotary_embedding"
        require_float(op, x)
        require_float(op, cos, "cos")
        require_float(op, sin, "sin")
        if cos.ndim != 2 or tuple(cos.shape) != tuple(sin.shape) and not all(a == b for a, b in zip(cos.shape, sin.shape)):
            raise TesseraShapeError(f"{op}: cos and sin must both be [S, R]; got {shape_str(cos.shape)} "
                                    f"and {shape_str(sin.shape)}")
        if x.ndim < 2 or not (x.shape[-2] == cos.shape[0]) or not (2 * Dim.of(cos.shape[1]) <= Dim.of(x.shape[-1])):
            raise TesseraShapeError(f"{op}: x has shape {shape_str(x.shape)} (…, S, D) but cos has "
                                    f"{shape_str(cos.shape)}; cos must be [S, R] with R <= D/2")
        return Aval(x.shape, x.dtype)

    def reference(self, x, cos, sin, *, inverse=False):
        R = cos.shape[-1]
        xf, c, s = _acc(x), _acc(cos), _acc(sin)
        if inverse:
            s = -s
        x1, x2 = xf[..., :R], xf[..., R:2 * R]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s, xf[..., 2 * R:]], -1).to(x.dtype)

    def vjp(self, cts, ins, outs, *, inverse=False):
        from ..core.autodiff import needs_cotangent

        x, cos, sin = ins
        ct = cts[0]
        dx = bind(ROTARY, ct, cos, sin, inverse=not inverse) if needs_cotangent(0) else None
        if not (needs_cotangent(1) or needs_cotangent(2)):  # fixed tables: skip their full-size products
            return dx, None, None
        dcos, dsin = _rotary_table_grads(ct, x, cos, sin)
        return dx, dcos, (-dsin if inverse else dsin)


def _rotary_table_grads(ct, x, cos, sin):
    """d(cos), d(sin) of the forward rotation, summed over x's leading dims (the tables are ``[S, R]``)."""
    from .elementwise import unbroadcast

    R = cos.shape[-1]
    c1, c2 = ct[..., :R], ct[..., R:2 * R]
    x1, x2 = x[..., :R], x[..., R:2 * R]
    dcos = unbroadcast(c1 * x1 + c2 * x2, cos.shape).to(cos.dtype)
    dsin = unbroadcast(c2 * x1 - c1 * x2, sin.shape).to(sin.dtype)
    return dcos, dsin


class AddNorm(Primitive):
    """``s = x + residual`` fused with the norm that follows: outputs (y, s, statistics...)."""

    multiple_results = True
    rms = False

    def shape(self, x, residual, weight, bias, *, eps):
        if not all(a == b for a, b in zip(x.shape, residual.shape)) or x.ndim != residual.ndim:
            raise TesseraShapeError(f"{self.name}: x has shape {shape_str(x.shape)} but residual has "
                                    f"{shape_str(residual.shape)}; they must match")
        require_same_dtype(self.name, x, "x", residual, "residual")
        norm = (RMS_NORM.shape(x, weight, eps=eps) if self.rms else LAYER_NORM.shape(x, weight, bias, eps=eps))
        return (norm[0], Aval(x.shape, x.dtype)) + tuple(norm[1:])

    def reference(self, x, residual, weight, bias, *, eps):
        s = x + residual
        norm = RMS_NORM.reference(s, weight, eps=eps) if self.rms else LAYER_NORM.reference(s, weight, bias, eps=eps)
        return (norm[0], s) + tuple(norm[1:])

    def vjp(self, cts, ins, outs, *, eps):
        x, residual, weight, bias = ins
        ct_y, ct_s = cts[0], cts[1]
        if ct_y is None:
            return ct_s, ct_s, None, None
        s = outs[1] if outs[1] is not None else x + residual  # the tape holds s weakly: recomputed if freed
        if self.rms:
            dsum, dw = bind(RMS_NORM_BWD, ct_y, s, weight, outs[2], ct_s)
            db = None
        else:
            dsum, dw, db = bind(LAYER_NORM_BWD, ct_y, s, weight, bias, outs[2], outs[3], ct_s)
        return dsum, dsum, dw, db


class AddLayerNorm(AddNorm):
    name = "add_layer_norm"
    attrs = (("eps", 1e-5),)
    nondiff_outputs = (2, 3)


class AddRmsNorm(AddNorm):
    name = "add_rms_norm"
    attrs = (("eps", 1e-6),)
    nondiff_outputs = (2,)
    rms = True


SWIGLU, SWIGLU_BWD, ROTARY = Swiglu(), SwigluBwd(), Rotary()
ADD_LAYER_NORM, ADD_RMS_NORM = AddLayerNorm(), AddRmsNorm()
