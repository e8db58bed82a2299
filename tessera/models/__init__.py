"""Pretrained models written with ``ts.nn``, loaded from safetensors checkpoints.

Example:
    >>> from tessera.models import load_bert, bert_encode, mean_pool
    >>> w = load_bert("path/to/all-MiniLM-L6-v2")   # doctest: +SKIP
"""
from .bert import BertConfig, BertLayer, BertWeights, bert_encode, load_bert, mean_pool

__all__ = ["BertConfig", "BertLayer", "BertWeights", "bert_encode", "load_bert", "mean_pool"]
