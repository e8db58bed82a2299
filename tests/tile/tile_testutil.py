"""Helpers shared by the tile-language tests."""


def rel_err(out, ref):
    """||out - ref|| / ||ref|| in float64."""
    out, ref = out.double().cpu(), ref.double().cpu()
    return ((out - ref).norm() / ref.norm()).item()
