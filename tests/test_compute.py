import json

from softlib.book import compute_page as compute
from softlib.cache import ResultCache


def test_section_timings_reads_the_runner_file(tmp_path, monkeypatch):
    monkeypatch.delenv("SOFTLIB_TIMINGS", raising=False)
    assert compute.section_timings().empty
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": {"seconds": 120, "peak_rss_mb": 500, "profile": "cpu"}}))
    monkeypatch.setenv("SOFTLIB_TIMINGS", str(path))
    t = compute.section_timings()
    assert t.loc["a", "minutes"] == 2.0 and t.loc["a", "profile"] == "cpu"


def test_recorded_benchmarks_name_the_machine(tmp_path, monkeypatch):
    monkeypatch.setattr(compute, "BENCHMARKS", tmp_path)
    assert compute.recorded_benchmarks().empty
    (tmp_path / "h100.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H100", "torch": "2.9"},
        "rows": [{"measurement": "engine epoch", "value": 1.0, "unit": "img/s", "note": ""}]}))
    df = compute.recorded_benchmarks()
    assert list(df["device"]) == ["NVIDIA H100"]


def test_benchmark_is_cached(tmp_path, monkeypatch):
    from softlib import bench
    calls = []

    def fake_run(quick, device):
        calls.append(1)
        return {"rows": [], "quick": quick}

    monkeypatch.setattr(bench, "run", fake_run)
    cache = ResultCache(tmp_path)
    assert compute.cached_benchmark(cache, quick=True, device="cpu") == {"rows": [], "quick": True}
    compute.cached_benchmark(cache, quick=True, device="cpu")
    assert len(calls) == 1
    compute.cached_benchmark(cache, quick=False, device="cpu")
    assert len(calls) == 2
