"""The GEMM autotuner: searched once, stored on disk under the software versions, reused, re-tuned
when corrupt or written by other versions, written atomically; failures are slow; cuBLAS may win."""
import glob
import json
import os
from dataclasses import replace

import pytest
import torch

from tessera.kernels.matmul import api, autotune
from tessera.kernels.matmul.configs import Config, Problem, candidates, default_config, skinny_config
from tessera.runtime import disk_cache


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


def _files(root, suffix=".json"):
    """Every file under ``root`` whose name ends with ``suffix`` ("" for all of them)."""
    return sorted(os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.endswith(suffix))


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _new_process(monkeypatch):
    """What a new process starts with: no memo, no cache object, no stored plans."""
    monkeypatch.setattr(autotune, "_MEMO", {})
    monkeypatch.setattr(autotune, "_CACHE", None)
    api._PLANS.clear()


def _matmul_vs_float64(a, b):
    out = api.matmul(a, b)
    ref = a.double() @ b.double()
    assert out.dtype == a.dtype and ((out.double() - ref).norm() / ref.norm()).item() < 5e-3


def test_cublas_chosen_when_fastest_is_recorded_and_read_back(fresh, monkeypatch, rng):
    """matmul itself: the tuner times Tessera's config and cuBLAS, cuBLAS measures faster, so it is
    chosen, stored on disk, and a new process dispatches to it from the disk without timing."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    ptr = Config("ptr", 16, 32, 16, 4, 1, 4)
    monkeypatch.setattr(api, "candidates", lambda p: [ptr])
    cublas_runs = []
    real_cublas = api._cublas
    monkeypatch.setattr(api, "_cublas", lambda *a, **k: (cublas_runs.append(1), real_cublas(*a, **k))[1])
    timed = []

    def fake_timed(fn):
        before = len(cublas_runs)
        fn()
        timed.append(len(cublas_runs) > before)
        return 0.5 if timed[-1] else 1.0  # cuBLAS measures twice as fast

    monkeypatch.setattr(autotune, "_timed", fake_timed)
    _new_process(monkeypatch)
    M, N, K = 45, 37, 72
    a = torch.randn(M, K, generator=rng).to(dev, torch.float16)
    b = torch.randn(K, N, generator=rng).to(dev, torch.float16)
    _matmul_vs_float64(a, b)
    assert sorted(timed) == [False, True]  # both were timed
    assert autotune.LAST[0] == Config("cublas") and len(cublas_runs) == 2  # timed once, then dispatched
    rec = autotune.cached_choice(autotune.LAST[1])
    assert rec["config"]["kernel"] == "cublas" and rec["ms"] == 0.5
    assert sorted(ms for ms, _ in rec["timings"]) == [0.5, 1.0]
    assert len(_files(fresh)) == 1

    _new_process(monkeypatch)
    monkeypatch.setattr(autotune, "_timed", lambda fn: pytest.fail("re-timed although the disk cache holds the choice"))
    cublas_runs.clear()
    a = torch.randn(M, K, generator=rng).to(dev, torch.float16)
    b = torch.randn(K, N, generator=rng).to(dev, torch.float16)
    _matmul_vs_float64(a, b)
    assert autotune.LAST[0] == Config("cublas") and len(cublas_runs) == 1


def test_entry_written_under_other_versions_is_not_used(fresh, monkeypatch):
    """The software versions are part of the entry's address: after an upgrade the old choice is
    not read (a fresh tuning runs and is stored beside it); the old versions still find theirs."""
    cands = [Config("tma", 128, 128), Config("tma", 128, 256)]
    key = {"op": "versioned", "shape": [4096, 4096, 4096]}
    now = disk_cache.software_versions()
    old = {**now, "triton": "0.0.1-old"}
    calls = []

    def tuned_under(versions, faster_bn):
        monkeypatch.setattr(disk_cache, "software_versions", lambda: dict(versions))
        monkeypatch.setattr(autotune, "_timed", lambda fn: 1.0 if calls[-1].BN == faster_bn else 2.0)
        _new_process(monkeypatch)
        calls.clear()
        return autotune.choose(key, ("ver",), cands[0], lambda: cands, _fake_runner(calls), "test")

    assert tuned_under(old, 256) == cands[1] and len(calls) == 2
    assert tuned_under(now, 128) == cands[0] and len(calls) == 2  # re-tuned, not read from the old entry
    assert len(_files(fresh)) == 2
    assert tuned_under(old, 128) == cands[1] and calls == []  # the old versions' entry is intact
    assert tuned_under(now, 256) == cands[0] and calls == []
    for field in ("tessera", "torch", "triton", "format"):  # each version moves the entry
        other = disk_cache.DiskCache("matmul-autotune", root=str(fresh))
        other.versions = {**now, field: "changed"}
        assert other.get(key) is None


def test_failed_write_leaves_the_old_entry_and_no_temporary_file(tmp_path, monkeypatch):
    cache = disk_cache.DiskCache("atomic", root=str(tmp_path))
    key = {"op": "matmul", "m": 4096}
    cache.put(key, {"BLOCK_M": 128})
    (path,) = _files(tmp_path)
    before = _read(path)

    def replace_fails(src, dst):
        raise OSError(28, "No space left on device")

    def dump_half_then_fail(doc, f):
        text = json.dumps(doc)
        f.write(text[: len(text) // 2])
        f.flush()
        raise OSError(5, "Input/output error")

    for target, name, fail, msg in ((disk_cache.os, "replace", replace_fails, "No space"),
                                    (disk_cache.json, "dump", dump_half_then_fail, "Input/output")):
        with monkeypatch.context() as m:
            m.setattr(target, name, fail)
            with pytest.raises(OSError, match=msg):
                cache.put(key, {"BLOCK_M": 256})
        assert _read(path) == before and cache.get(key) == {"BLOCK_M": 128}
        assert _files(tmp_path, "") == [path]
    cache.put(key, {"BLOCK_M": 64})  # a write that completes replaces the entry whole
    assert cache.get(key) == {"BLOCK_M": 64} and _files(tmp_path, "") == [path]


def test_tuning_survives_a_failed_cache_write(fresh, monkeypatch):
    """A cache folder that cannot be written loses the record, not the call: the tuned config is
    returned and memoised, with a warning; the entry on disk and the folder are left as they were."""
    cands = [Config("tma", 128, 128), Config("tma", 128, 256)]
    key = {"op": "unwritable"}
    autotune._cache().put(key, {"config": {"kernel": "no-such-kernel"}})  # valid JSON, unusable: re-tuned
    (path,) = _files(fresh)
    before = _read(path)
    calls = []
    monkeypatch.setattr(autotune, "_timed", lambda fn: 1.0 if calls[-1].BN == 256 else 2.0)

    def replace_fails(src, dst):
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(disk_cache.os, "replace", replace_fails)
    with pytest.warns(UserWarning, match="could not store the tuned config.*TESSERA_CACHE_DIR"):
        best = autotune.choose(key, ("ro",), cands[0], lambda: cands, _fake_runner(calls), "test")
    assert best == cands[1] and len(calls) == 2
    assert _read(path) == before and _files(fresh, "") == [path]
    calls.clear()
    assert autotune.choose(key, ("ro",), cands[0], lambda: cands, _fake_runner(calls), "test") == best
    assert calls == []


def test_registry_routes_small_products_to_the_tuner_only_when_it_runs(monkeypatch):
    # without tuning, products with a dim under 512 go to cuBLAS (a measured default); with tuning the
    # own kernels are timed against cuBLAS and the winner is recorded
    import tessera.kernels.lowerings as low
    from tessera.core.primitive import registry

    assert low.register_all() == []
    supports = registry["matmul"].lowerings["cuda"].supports
    a, b = torch.randn(16, 1024), torch.randn(1024, 1024)
    monkeypatch.setattr("tessera.kernels.matmul.supports", lambda *x, **k: True)  # any device: routing only
    monkeypatch.delenv("TESSERA_AUTOTUNE", raising=False)
    assert not supports(a, b, accum=None)
    monkeypatch.setenv("TESSERA_AUTOTUNE", "1")
    assert supports(a, b, accum=None)
