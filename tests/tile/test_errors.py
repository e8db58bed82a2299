"""Every bad input is a TesseraCompileError that shows the user's line with a caret and says what to change."""
import inspect

import pytest
import torch

from tessera.errors import TesseraCompileError

import bad_kernels as bk


def _marked_line(k) -> str:
    lines, _ = inspect.getsourcelines(k.fn)
    return next(l for l in lines if "# <-" in l).split("# <-")[0].strip()


CASES = [
    (bk.non_pow2_alloc, (torch.ones(16),), "powers of two", "use 128"),
    (bk.non_pow2_slice, (torch.ones(200), torch.ones(200)), "power of two", "use 128"),
    (bk.while_loop, (torch.ones(16),), "`while` loops are not supported", "ts.tile.range"),
    (bk.recursive, (torch.ones(16),), "recursion", "ts.tile.range"),
    (bk.closure_over_tensor, (torch.ones(16), torch.ones(16)), "tensor `CAPTURED` from the enclosing scope",
     "CAPTURED: ts.Tile"),
    (bk.calls_python_helper, (torch.ones(16), torch.ones(16)), "is a Python function", "inline"),
    (bk.uses_lambda, (torch.ones(16),), "Lambda", "ts.tile ops"),
    (bk.matmul_dtype_mismatch, (torch.ones(32, 16, dtype=torch.float16), torch.ones(16, 16, dtype=torch.bfloat16),
                                torch.ones(32, 16)), "dtypes f16 and bf16", "ts.tile.cast(b, f16)"),
    (bk.store_to_input, (torch.ones(16), torch.ones(16)), "`X` is read-only", "outputs="),
    (bk.store_to_readonly, (torch.ones(16), torch.ones(16)), "`X` is read-only", "output parameter"),
    (bk.branch_on_data, (torch.ones(16), torch.ones(16)), "`if` on a runtime value", "ts.tile.where"),
    (bk.ambiguous_broadcast, (torch.ones(16, 16), torch.ones(16, 16)), "ambiguous", "row[:, None]"),
    (bk.buffer_shape_mismatch, (torch.ones(2, 32, 128),), "is [16, 128] but the buffer `buf` is [16, 64]",
     "allocate `buf` with shape (16, 128)"),
    (bk.carried_type_changes, (torch.ones(32), torch.ones(32)), "enters this loop as tile<16xf32>", "cast it"),
]


@pytest.mark.parametrize("k,args,what,fix", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_kernel_is_rejected_with_caret(k, args, what, fix):
    with pytest.raises(TesseraCompileError) as e:
        k.lower(*args)
    msg = str(e.value)
    assert what in msg
    assert "fix: " in msg and fix in msg
    assert _marked_line(k) in msg, msg
    assert "bad_kernels.py" in msg and "^" in msg.splitlines()[3]
    assert k.fn.__name__ in msg
