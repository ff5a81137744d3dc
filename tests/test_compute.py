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


def _records(tmp_path, monkeypatch):
    """Three GPU records as benchmarks/ holds them: softlib.bench's rows, a graph-reuse record
    (steady states per mode) and per-architecture speeds (one model, stacked)."""
    monkeypatch.setattr(compute, "BENCHMARKS", tmp_path)
    (tmp_path / "h200-bench.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H200", "torch": "2.11"},
        "rows": [{"measurement": "engine / bare", "value": 0.97, "unit": "ratio"},
                 {"measurement": "10 models at once (vmap)", "value": 47_800.0, "unit": "img/s"},
                 {"measurement": "10 models at once / DataLoader, 8 workers", "value": 2.5,
                  "unit": "x"}]}))
    (tmp_path / "h200-reuse.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H200"}, "k": 10, "batch": 128, "rows": [{"call": 0}],
        "steady_state": {"False": {"img_per_s": 38_000.0},
                         "reduce-overhead": {"img_per_s": 120_000.0}}}))
    (tmp_path / "h100-reuse.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H100 80GB HBM3"}, "k": 10, "batch": 64,  # another batch
        "steady_state": {"False": {"img_per_s": 500_000.0}}}))
    (tmp_path / "h200-archs.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H200"},
        "rows": [{"measurement": "train ResNet-110", "arch": "rn110", "role": "train",
                  "value": 3_000.0, "unit": "img/s"},
                 {"measurement": "predict ResNet-110", "arch": "rn110", "role": "eval",
                  "value": 40_000.0, "unit": "img/s"},
                 {"measurement": "train ResNet-110, 10 models at once", "arch": "rn110",
                  "role": "train_stacked", "models": 10, "value": 10_000.0, "unit": "img/s"}]}))
    (tmp_path / "h100-groups.json").write_text(json.dumps({
        "machine": {"gpu": "NVIDIA H100 80GB HBM3"},
        "rows": [{"measurement": "train duq, 21 models at once", "arch": "duq",
                  "role": "train_stacked", "models": 21, "value": 7_400.0, "unit": "img/s"}]}))


def test_recorded_gpu_targets_take_the_best_measurement_per_gpu(tmp_path, monkeypatch):
    _records(tmp_path, monkeypatch)
    t = compute.gpu_targets().reset_index()
    rows = {(r["target"][:10], r["GPU"]): r for r in t.to_dict("records")}
    engine = rows[("engine / b", "H200")]
    assert engine["verdict"] == "met" and engine["best recorded"] == "0.97 ratio"
    grid = rows[("fold grid:", "H200")]   # CUDA graphs beat the eager 47,800 and 38,000
    assert grid["best recorded"] == "120,000 img/s" and grid["verdict"] == "met"
    assert grid["how"].startswith("CUDA graphs") and grid["record"] == "h200-reuse.json"
    assert ("fold grid:", "H100 80GB HBM3") not in rows    # batch 64 is not the fold grid
    loader = rows[("fold grid ", "H200")]
    assert loader["verdict"] == "missed" and loader["required"] == ">= 3 x"
    # nothing recorded: every target listed, none met
    monkeypatch.setattr(compute, "BENCHMARKS", tmp_path / "none")
    empty = compute.gpu_targets()
    assert len(empty) == len(compute.GPU_TARGETS)
    assert set(empty["verdict"]) == {"n/a"} and set(empty["best recorded"]) == {"not measured yet"}


def test_recorded_benchmarks_sum_up_graph_reuse_calls_as_their_steady_state(tmp_path,
                                                                           monkeypatch):
    _records(tmp_path, monkeypatch)
    df = compute.recorded_benchmarks()
    reuse = df[df["file"] == "h200-reuse.json"]
    assert list(reuse["value"]) == [38_000.0, 120_000.0]     # not the per-call rows
    assert reuse["measurement"].str.contains("steady state").all()
    assert not df["measurement"].isna().any()


def test_training_speeds_plot_one_model_beside_the_largest_stacked_group(tmp_path, monkeypatch):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    _records(tmp_path, monkeypatch)
    speeds = compute.training_speeds()
    assert sorted(zip(speeds["arch"], speeds["models"], speeds["GPU"])) == [
        ("duq", 21, "H100"), ("rn110", 1, "H200"), ("rn110", 10, "H200")]  # no eval row
    assert set(speeds.loc[speeds["arch"] == "rn110", "label"]) == {"ResNet-110"}
    fig = compute.plot_training_speeds(speeds)
    ax = fig.axes[0]
    assert sorted(p.get_width() for p in ax.patches) == [3_000.0, 7_400.0, 10_000.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ResNet-110", "duq"]
    texts = {t.get_text() for t in ax.texts}
    assert {"3,000 (H200)", "10,000 (10 at once, H200)", "7,400 (21 at once, H100)"} <= texts
    assert ax.get_xscale() == "log"
    plt.close(fig)
