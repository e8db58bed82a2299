"""The benchmark suite: ``python -m tessera.bench <suite> [--quick] [--json PATH]``.

Each suite times Tessera and its peers in the same run with
``triton.testing.do_bench`` medians on fresh random inputs and prints a table.
"""
