"""Primitive definitions, one module per family, and the op functions built on them."""
