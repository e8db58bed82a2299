"""Tessera's type layer: symbolic dimensions and tensor annotations."""
