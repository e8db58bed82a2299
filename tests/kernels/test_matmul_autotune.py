"""The GEMM autotuner: searched once, stored on disk, reused, re-tuned when corrupt; failures are slow."""
import glob
from dataclasses import replace

import pytest

from tessera.kernels.matmul import autotune
from tessera.kernels.matmul.configs import Config, Problem, candidates, default_config, skinny_config


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("TESSERA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("TESSERA_AUTOTUNE", "1")
    monkeypatch.setattr(autotune, "_CACHE", None)
    monkeypatch.setattr(autotune, "_MEMO", {})
    return tmp_path


def _fake_runner(calls):
    def make(cfg):
        calls.append(cfg)
        if cfg.BN == 64:
            raise RuntimeError("out of resources")  # must count as infinitely slow, not crash
        return lambda: None
    return make


def test_tunes_once_then_reads_the_disk_cache(fresh, monkeypatch, capsys):
    cands = [Config("tma", 128, 128), Config("tma", 128, 256), Config("ptr", 16, 64)]
    monkeypatch.setattr(autotune, "_timed", lambda fn: 1.0 if calls[-1].BN == 256 else 2.0)
    calls = []
    key = {"op": "test", "shape": [1, 2, 3]}
    best = autotune.choose(key, ("m",), cands[0], lambda: cands, _fake_runner(calls), "test")
    assert best == Config("tma", 128, 256) and len(calls) == 3
    assert "autotuning test" in capsys.readouterr().err  # a progress line while tuning
    rec = autotune.cached_choice(key)
    assert any(ms is None for ms, _ in rec["timings"])  # the failed config was recorded as infinitely slow
    monkeypatch.setattr(autotune, "_MEMO", {})  # a new process: no memo, the disk answers
    calls.clear()
    assert autotune.choose(key, ("m",), cands[0], lambda: cands, _fake_runner(calls), "test") == best
    assert calls == []


def test_corrupt_entry_is_retuned(fresh, monkeypatch):
    cands = [Config("tma", 128, 128), Config("tma", 128, 256)]
    calls = []
    monkeypatch.setattr(autotune, "_timed", lambda fn: 1.0)
    key = {"op": "test2"}
    autotune.choose(key, ("k",), cands[0], lambda: cands, _fake_runner(calls), "test")
    for path in glob.glob(str(fresh / "**" / "*.json"), recursive=True):
        with open(path, "w") as f:
            f.write("{not json")
    monkeypatch.setattr(autotune, "_MEMO", {})
    calls.clear()
    autotune.choose(key, ("k",), cands[0], lambda: cands, _fake_runner(calls), "test")
    assert len(calls) == 2


def test_off_by_default_uses_the_heuristic(monkeypatch):
    monkeypatch.delenv("TESSERA_AUTOTUNE", raising=False)
    monkeypatch.setattr(autotune, "_MEMO", {})
    d = Config("ptr", 16, 64)
    assert autotune.choose({"op": "x"}, ("off",), d, lambda: pytest.fail("tuned"), None, "x") is d


def test_heuristic_and_candidates():
    big = Problem(8192, 8192, 8192, 1, 2, True, False, 132)
    assert default_config(big) == Config("tma", 128, 256, 64, 8, 4, 8, subtile=True, warp_spec=True)
    wide = Problem(8192, 16384, 4096, 1, 2, True, False, 132)
    assert default_config(wide) == Config("tma", 128, 256, 64, 8, 3, 8, warp_spec=True)
    assert any(c.warp_spec and c.subtile for c in candidates(big))
    assert not any(c.warp_spec and c.flatten for c in candidates(big))  # Hopper: no flattening with it
    dec = Problem(1, 4096, 4096, 1, 2, True, False, 132)
    d = default_config(dec)
    assert d.kernel == "skinny" and d.BM == 16 and d.split_k > 1 and d.swap
    strided = Problem(1, 4096, 4096, 1, 2, False, False, 132)  # TMA cannot read it: pointer kernel
    assert default_config(strided).kernel == "ptr"
    assert {c.kernel for c in candidates(dec)} == {"ptr", "skinny"}
    assert all(c.kernel in ("tma", "ptr") for c in candidates(big)) and len(set(candidates(big))) == len(candidates(big))
    assert big.bucket() == (8192, 8192, 8192) and Problem(12288, 100, 7, 1, 2, True, False, 132).bucket() == (8192, 128, 8)


def test_skinny_defaults_fit_shared_memory():
    """Every decode default keeps its pipelined tiles under the ~227 KB an H100 SM offers."""
    for M in (1, 2, 16, 17, 33, 64, 65, 128):
        for N, K in ((4096, 4096), (8192, 8192), (1000, 4104), (128256, 4096)):
            for itemsize in (2, 4):
                c = skinny_config(Problem(M, N, K, 1, itemsize, True, False, 132))
                smem = c.stages * (c.BM + c.BN) * c.BK * itemsize
                assert c.kernel == "skinny" and 2 <= c.stages <= 6 and smem <= 200 * 1024, (M, N, K, c)
                assert c.BM >= min(M, 128) and 1 <= c.split_k <= 16


def test_gluon_kernel_is_chosen_only_where_allowed(monkeypatch):
    from tessera.kernels.matmul import gluon_ws
    from tessera.kernels.matmul.configs import GLUON_DEFAULT

    big = Problem(8192, 8192, 8192, 1, 2, True, False, 132)
    allowed = Problem(8192, 8192, 8192, 1, 2, True, False, 132, gluon_ok=True)
    assert default_config(big).kernel == "tma" and default_config(allowed) == GLUON_DEFAULT
    # few tiles, or decode shapes: the other kernels even where it is allowed
    assert default_config(Problem(1024, 1024, 8192, 1, 2, True, False, 132, gluon_ok=True)).kernel == "tma"
    assert default_config(Problem(16, 8192, 8192, 1, 2, True, False, 132, gluon_ok=True)).kernel != "gluon"
    assert not any(c.kernel == "gluon" for c in candidates(big))
    tuned = candidates(allowed)
    assert {c.GROUP_M for c in tuned if c.kernel == "gluon"} == {4, 8, 16}
    split = [gluon_ws.overrides_of(c) for c in tuned if c.kernel == "gluon" and c.subtile]
    assert split == [dict(BLOCK_N=256, BLOCK_K=64, STAGES=4, GROUP_M=16, SPLIT_N=2)]
    assert gluon_ws.overrides_of(GLUON_DEFAULT)["SPLIT_N"] == 1
    assert {c for c in tuned if c.kernel == "tma"} == {c for c in candidates(big) if c.kernel == "tma"}
    assert Config.from_json(GLUON_DEFAULT.to_json()) == GLUON_DEFAULT
    # fp8: the Gluon kernel with 128-deep K blocks (128 bytes a row), unless a bias is fused
    fp8 = Problem(8192, 8192, 8192, 1, 1, True, False, 132, fp8=True, gluon_ok=True)
    assert default_config(fp8) == replace(GLUON_DEFAULT, BK=128)
    assert {c.BK for c in candidates(fp8) if c.kernel == "gluon"} == {128}
    # fused epilogues and 16384-wide outputs: the Triton kernel by default, the Gluon kernel among
    # the candidates
    for p in (replace(fp8, epilogue=True), replace(allowed, epilogue=True), replace(allowed, N=16384)):
        assert default_config(p).kernel == "tma"
        assert {c.GROUP_M for c in candidates(p) if c.kernel == "gluon"} == {4, 8, 16}
    monkeypatch.delenv("TESSERA_GLUON_GEMM", raising=False)
    assert gluon_ws.enabled()
    monkeypatch.setenv("TESSERA_GLUON_GEMM", "0")
    assert not gluon_ws.enabled()
