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


def test_benchmark_and_timing_figures_draw_the_throughputs_and_sections(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bench = {"machine": {"device": "cuda", "gpu": "NVIDIA H100", "cpu": "x86"}, "repeats": 3,
             "rows": [{"measurement": "engine epoch", "value": 900.0, "unit": "img/s", "note": ""},
                      {"measurement": "bare loop", "value": 1000.0, "unit": "img/s", "note": ""},
                      {"measurement": "engine / bare", "value": 0.9, "unit": "ratio",
                       "note": "target >= 0.9"}]}
    fig = compute.plot_benchmark(bench)
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == [900.0, 1000.0]  # throughputs only
    assert "cuda: NVIDIA H100" in ax.get_title() and "median of 3" in ax.get_title()
    plt.close(fig)
    assert list(compute.other_measurements(bench)["measurement"]) == ["engine / bare"]
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"a": {"seconds": 120, "peak_rss_mb": 500, "profile": "cpu"},
                                "b": {"seconds": 60, "peak_rss_mb": 400, "profile": "cpu"}}))
    monkeypatch.setenv("SOFTLIB_TIMINGS", str(path))
    fig = compute.plot_section_timings(compute.section_timings(), "cpu")
    ax = fig.axes[0]
    assert sorted(p.get_width() for p in ax.patches) == [1.0, 2.0]
    assert "3.0 min" in ax.get_title()
    plt.close(fig)
