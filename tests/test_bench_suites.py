"""The benchmark suites' shared pieces on the CPU: FLOP counts, the table, the JSON file and the
command line (which writes JSON by default)."""
import json
import re

import pytest
import torch

from tessera.bench.__main__ import available_suites, main
from tessera.bench.common import Row, bench_ms, device_name, format_table, write_json
from tessera.bench.suites.attention import attention_flops

ROWS = [
    Row("attention", "fwd d128 S4096 full", "TFLOP/s", 600.0, {"sdpa_flash": 300.0, "cudnn": 500.0},
        notes="B8 H16 bf16"),
    Row("attention", "fwd+bwd d64 S1024 causal", "TFLOP/s", None, {"cudnn": 412.5}),
    Row("core", "add", "us", 2.0, {"torch": 3.0}, higher_is_better=False),
]


def test_attention_flops_by_hand():
    B, H, Sq, Sk, D = 3, 5, 7, 11, 13
    # forward: S = Q K^T and O = P V, 2·Sq·Sk·D each per head
    fwd = B * H * (2 * Sq * Sk * D + 2 * Sq * Sk * D)
    # backward: S recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q
    bwd = B * H * 5 * (2 * Sq * Sk * D)
    assert attention_flops(B, H, Sq, Sk, D, causal=False) == fwd == 60060
    assert attention_flops(B, H, Sq, Sk, D, causal=True) == fwd / 2
    assert attention_flops(B, H, Sq, Sk, D, causal=False, backward=True) == fwd + bwd == 210210
    assert attention_flops(B, H, Sq, Sk, D, causal=True, backward=True) == (fwd + bwd) / 2


def test_ratio_favours_tessera_in_every_unit():
    assert ROWS[0].ratio("sdpa_flash") == 2.0 and ROWS[0].ratio("cudnn") == 1.2
    assert ROWS[1].ratio("cudnn") is None and ROWS[1].ratio("absent") is None
    assert ROWS[2].ratio("torch") == 1.5  # a time: the peer's 3 us over Tessera's 2 us


@pytest.mark.parametrize("medians,expect,calls", [([0.05, 0.02, 0.04], 0.02, 3), ([0.5, 0.1, 0.1], 0.5, 1)])
def test_bench_ms_keeps_the_best_window_of_short_calls(monkeypatch, medians, expect, calls):
    """Short calls are timed in three windows (a host stall moves one window's median); long calls
    in one; the garbage collector is paused while timing and restored after."""
    import gc

    import triton.testing

    seen = []

    def fake_do_bench(fn, warmup, rep, return_mode, **kw):
        seen.append((return_mode, kw, gc.isenabled()))
        return medians[len(seen) - 1]

    monkeypatch.setattr(triton.testing, "do_bench", fake_do_bench)
    assert gc.isenabled()
    assert bench_ms(lambda: None, grad_to_none=["g"]) == expect
    assert len(seen) == calls and all(s == ("median", {"grad_to_none": ["g"]}, False) for s in seen)
    assert gc.isenabled()


def _cells(line):
    return re.split(r"\s{2,}", line.strip())


def test_format_table():
    lines = format_table(ROWS).splitlines()
    assert len(lines) == 1 + len(ROWS)
    assert _cells(lines[0]) == ["suite", "workload", "unit", "tessera", "sdpa_flash", "cudnn", "torch",
                                "xsdpa_flash", "xcudnn", "xtorch"]
    assert _cells(lines[1]) == ["attention", "fwd d128 S4096 full", "TFLOP/s", "600.0", "300.0", "500.0", "-",
                                "2.00", "1.20", "-"]
    assert _cells(lines[2]) == ["attention", "fwd+bwd d64 S1024 causal", "TFLOP/s", "-", "-", "412.5", "-",
                                "-", "-", "-"]
    assert _cells(lines[3]) == ["core", "add", "us", "2", "-", "-", "3", "-", "-", "1.50"]
    starts = [m.start() for m in re.finditer(r"\S+", lines[0])]
    for line in lines[1:]:
        assert all(line[s - 1] == " " and line[s] != " " for s in starts[1:]), line


def test_write_json_round_trips_the_rows(tmp_path):
    path = tmp_path / "rows.json"
    write_json(ROWS, str(path))
    doc = json.loads(path.read_text())
    assert doc["torch"] == torch.__version__ and doc["device"] == device_name()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["date"])
    assert len(doc["rows"]) == len(ROWS)
    for saved, row in zip(doc["rows"], ROWS):
        assert saved.pop("ratios") == {p: row.ratio(p) for p in row.peers}
        assert Row(**saved) == row


@pytest.fixture
def no_cuda(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_attention_suite_is_listed():
    assert "attention" in available_suites()


def test_attention_suite_without_a_gpu_writes_empty_json_by_default(no_cuda, capsys):
    assert main(["attention", "--quick"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "== attention on cpu"
    assert out[1] == "attention suite: no CUDA device, nothing to time"
    assert _cells(out[2]) == ["suite", "workload", "unit", "tessera"]
    assert out[-1] == "wrote bench-attention.json"
    doc = json.loads((no_cuda / "bench-attention.json").read_text())
    assert doc["device"] == "cpu" and doc["rows"] == []


def test_json_path_replaces_the_default(no_cuda, capsys):
    target = no_cuda / "sub" / "attention.json"
    target.parent.mkdir()
    assert main(["attention", "--json", str(target)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {target}"
    assert json.loads(target.read_text())["rows"] == []
    assert not (no_cuda / "bench-attention.json").exists()


def test_unknown_suite_is_rejected(no_cuda, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nonesuch"])
    assert e.value.code == 2 and "invalid choice: 'nonesuch'" in capsys.readouterr().err
    assert list(no_cuda.iterdir()) == []
