"""Tests of section 5's figures and reading tables (softlib.studies.laing): what each draws or
shows, on small constructed inputs shaped like the section's grid."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer, ErrorbarContainer  # noqa: E402

from softlib.losses import mix_probability_from_entropy  # noqa: E402
from softlib.studies import laing as L  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------ inputs

def _data(n=2000, ood_sizes=(None, 20, 800)):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10) * 0.3, size=n)
    labels = probs.argmax(1)
    ood = {name: None if k is None else np.zeros((k, 32, 32, 3), np.uint8)
           for name, k in zip(("svhn", "fashion_mnist", "other"), ood_sizes)}
    return L.LaingData(images=np.zeros((n, 32, 32, 3), np.uint8), labels=labels, probs=probs,
                       ood=ood)


def _split():
    return L.Split(np.arange(1200), np.arange(1200, 1500), np.arange(1500, 2000))


def _runs_frame(seeds=(0, 1), model_types=("basic", "sngp", "duq"),
                conditions=("hard", "soft", "label_smoothing")):
    """A long table like ``run_grid``'s: one row per seed x model type x condition."""
    rows = []
    for s in seeds:
        for i, mt in enumerate(model_types):
            for k, c in enumerate(conditions):
                base = 0.05 + 0.01 * i + 0.02 * k
                rows.append({"model_type": mt, "condition": c, "seed": s,
                             "accuracy": 80.0 + k + s, "ece": base + 0.01 * s,
                             "ece_ts": base / 2 + 0.005 * s, "nll": 1.5 + 0.1 * k + 0.05 * s,
                             "nll_ts": 1.4 + 0.1 * k, "temperature": 0.9,
                             "ood_auroc_fashion_mnist": 0.6 + 0.01 * k,
                             "attack_decrease": 0.3 + 0.01 * k * (s + 1),
                             "train_seconds": 30.0 + i, "images_per_second": 667.63,
                             "epochs_run": 3 + (s if mt == "sngp" else 0),
                             "n_parameters": 68786 if mt != "duq" else 396136})
    return pd.DataFrame(rows)


def _run_result(model_type, condition, seed, n=200, sharp=3.0):
    rng = np.random.default_rng(seed + 10 * len(condition))
    z = rng.normal(size=(n, 10)) * sharp
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 10, n)
    return L.RunResult(model_type, condition, seed, {}, p.astype(np.float32), y)


# ------------------------------------------------------------------------------ tables

def test_data_facts_counts_with_thousands_separators_and_says_which_ood_set_is_absent():
    data, sp = _data(), _split()
    f = L.data_facts(data, sp)["value"]
    assert f["images (CIFAR-10H)"] == "2,000"
    assert f["train / val / test (first seed)"] == "1,200 / 300 / 500"
    mix = round(mix_probability_from_entropy(data.probs[sp.train]), 4)
    assert float(f["mixing probability (mean entropy of the training soft labels, nats)"]) == mix
    eps = round(L.matched_smoothing_eps(data.probs[sp.train], data.labels[sp.train]), 4)
    assert float(f["matched label-smoothing eps"]) == eps
    assert f["OOD set svhn"].startswith("ABSENT") and "n/a" in f["OOD set svhn"]
    assert f["OOD set fashion_mnist"] == "20 images available; 20 used per model"
    assert f["OOD set other"] == "800 images available; 500 used per model"  # as many as test


def test_parameter_table_marks_only_the_parameters_that_differ_from_the_paper():
    t = L.parameter_table({"epochs": 3, "seeds": [0], "lr": 0.05},
                          {"epochs": 230, "seeds": [0, 1, 2, 3, 4], "lr": 0.05})
    assert list(t.index) == ["epochs", "seeds", "lr"]
    assert list(t["shrunk"]) == ["yes", "yes", ""]
    assert t.loc["seeds", "this run"] == "[0]" and t.loc["epochs", "paper profile"] == "230"


def test_timing_table_shows_counts_whole_and_unknown_values_as_na():
    runs = _runs_frame()
    runs.loc[runs.model_type == "duq", "train_seconds"] = np.nan
    t = L.timing_table(runs)
    assert list(t.index) == ["basic", "sngp", "duq"]
    assert t.loc["basic", "epochs run"] == "3"  # not 3.0
    assert t.loc["sngp", "epochs run"] == "3.5"  # the mean of 3 and 4 stays a mean
    assert t.loc["duq", "parameters"] == "396,136"
    assert t.loc["basic", "images per second"] == "668"
    assert t.loc["basic", "training time (s)"] == "30"
    assert t.loc["duq", "training time (s)"] == "n/a"


def test_differences_table_writes_difference_and_se_and_orders_metrics_as_table_1():
    runs = _runs_frame(seeds=(0, 1, 2))
    one_seed = _runs_frame(seeds=(0,), model_types=("duq",))
    d = L.paired_differences(pd.concat([runs[runs.model_type != "duq"], one_seed]))
    t = L.differences_table(d)
    assert list(t.columns) == [m for m in L.METRICS if m in set(d.metric)]
    assert list(t.columns)[:2] == ["accuracy", "ood_auroc_fashion_mnist"]
    assert t.loc[("basic", "soft - hard"), "accuracy"] == "+1 ± 0"  # no seed noise: se 0
    cell = t.loc[("basic", "soft - hard"), "attack_decrease"]
    se = np.std([0.01, 0.02, 0.03], ddof=1) / np.sqrt(3)
    assert cell == f"+0.02 ± {se:.2g}"
    assert "±" not in t.loc[("duq", "soft - hard"), "ece"]  # one seed: no standard error


def test_paper_ece_leaves_out_duq_whose_ece_is_of_the_authors_output():
    e = L.paper_ece()
    assert e[("basic", "soft")] == pytest.approx(0.0905)
    assert e[("sngp", "hard")] == pytest.approx(0.0472)
    assert ("duq", "soft") not in e
    assert ("basic", "label_smoothing") not in e


def test_styled_direction_check_keys_rows_by_model_type_and_metric_and_writes_na():
    runs = _runs_frame(seeds=(0, 1, 2), model_types=("basic",))
    check = L.paper_direction_check(L.paired_differences(runs))
    styled = L.styled_direction_check(check)
    assert list(styled.data.index.names) == ["model_type", "metric"]
    html = styled.to_html()
    assert "+1.55" in html  # the paper's basic soft - hard accuracy
    assert "n/a" in html  # SVHN is not in the constructed runs
    assert "nan" not in html.lower().replace("nans", "")
    assert ">0<" not in html.replace(" ", "")  # no 0..n row index


def test_soft_minus_hard_markdown_says_whether_each_difference_exceeds_seed_noise():
    three = _runs_frame(seeds=(0, 1, 2), model_types=("basic",))
    soft = three.condition == "soft"
    three.loc[soft, "ece"] += [0.0, 0.02, -0.02]  # 1.7 s.e. from zero
    three.loc[soft, "accuracy"] += [0.0, 0.5, -0.5]  # 3.5 s.e. from zero
    one = _runs_frame(seeds=(0,), model_types=("duq",))
    d = L.paired_differences(pd.concat([three, one]))
    md = L.soft_minus_hard_markdown(d, ["duq", "basic"])
    lines = md.splitlines()
    assert lines[0] == "**Soft minus hard in this run**"
    bullets = [ln for ln in lines if ln.startswith("- ")]
    assert len(bullets) == 2 * len(L.SUMMARY_METRICS)
    assert bullets[0].startswith("- duq, accuracy (%)")  # the order of model_types
    assert "- basic, accuracy (%): soft - hard = +1.0000 (exceeds 2 s.e.)" in md
    assert "- duq, ECE: soft - hard = +0.0200 (one seed: not separable from noise)" in md
    assert "- basic, FGSM attack decrease: soft - hard = +0.0200 (exceeds 2 s.e.)" in md
    assert "- basic, ECE: soft - hard = +0.0200 (within seed noise)" in md


def test_temperature_markdown_answers_per_model_type_or_says_why_not():
    md = L.temperature_markdown(_runs_frame())
    assert md.startswith("**Does temperature scaling undo soft labels' ECE cost?**")
    assert sum(ln.startswith("- ") for ln in md.splitlines()) == 3
    assert "(means over 2 seeds)" in md
    hard_only = L.temperature_markdown(_runs_frame(conditions=("hard",)))
    assert hard_only.endswith("- no model type has both hard and soft runs here")


# ------------------------------------------------------------------------------ figures

def test_plot_reliability_draws_a_curve_and_bars_per_condition_with_the_papers_ece():
    runs = [_run_result(mt, c, s) for s in (0, 1) for mt, c in
            [("basic", "hard"), ("basic", "soft"), ("duq", "hard")]]
    fig = L.plot_reliability(runs, ["basic", "duq"])
    axes = np.array(fig.axes).reshape(2, 2)  # subplots run row by row
    top, bottom = axes[0], axes[1]
    assert [ax.get_title() for ax in top] == [L.MODEL_TYPES["basic"].label,
                                              L.MODEL_TYPES["duq"].label]
    labels = [t.get_text() for t in top[0].get_legend().get_texts()]
    assert labels == ["hard (paper ECE 0.0463)", "soft (paper ECE 0.0905)"]
    assert [t.get_text() for t in top[1].get_legend().get_texts()] == ["hard"]  # no paper ECE
    assert sum(isinstance(c, ErrorbarContainer) for c in top[0].containers) == 2
    assert sum(isinstance(c, ErrorbarContainer) for c in top[1].containers) == 1
    assert len(bottom[0].patches) == 20 and len(bottom[1].patches) == 10  # 10 bins each
    # the points are the non-empty bins of the pooled predictions (both seeds)
    rel = L.pooled_reliability(runs, "basic", "hard")
    line = next(c for c in top[0].containers if isinstance(c, ErrorbarContainer))[0]
    assert len(line.get_xdata()) == int((rel["count"] > 0).sum())
    np.testing.assert_allclose(line.get_ydata(), rel["accuracy"][rel["count"] > 0])
    heights = sorted(p.get_height() for p in bottom[0].patches)
    assert sum(heights) == pytest.approx(2.0)  # two shares of test images, each summing to 1
    assert "2 seeds pooled" in fig._suptitle.get_text()
    one = L.plot_reliability(runs[:3], ["basic", "duq"])
    assert "1 seed pooled" in one._suptitle.get_text()


def test_plot_temperature_scaling_bars_before_and_after_and_paper_marks_where_published():
    runs = _runs_frame()
    fig = L.plot_temperature_scaling(runs, ["basic", "sngp", "duq"])
    left, right = fig.axes[:2]
    for ax in (left, right):
        assert len(ax.patches) == 2 * 3 * 3  # (before, after) x conditions x model types
        assert [t.get_text() for t in ax.get_xticklabels()] == ["basic", "sngp", "duq"]
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert all(c.errorbar is not None for c in bars)  # 2 seeds: ±1 s.e. drawn
    # the narrow bar is after temperature scaling: basic, hard, mean over the two seeds
    narrow = [p for p in left.patches if p.get_width() == pytest.approx(0.12)]
    assert narrow[0].get_height() == pytest.approx(runs.query(
        "model_type == 'basic' and condition == 'hard'").ece_ts.mean())
    marks = {ln.get_label(): ln for ln in left.get_lines() if ln.get_marker() == "D"}
    assert set(marks) == {"paper ECE, hard (Laing Table 1, no TS)",
                          "paper ECE, soft (Laing Table 1, no TS)"}  # none for smoothing
    hard = marks["paper ECE, hard (Laing Table 1, no TS)"]
    np.testing.assert_allclose(hard.get_ydata(), [0.0463, 0.0472])  # basic, sngp; not DUQ
    assert not [ln for ln in right.get_lines() if ln.get_marker() == "D"]
    assert "±1 s.e. over 2 seeds" in left.get_title()
    assert "beyond the paper" in right.get_title()


def test_plot_temperature_scaling_with_one_seed_draws_no_error_bars():
    fig = L.plot_temperature_scaling(_runs_frame(seeds=(0,), conditions=("hard", "soft")),
                                     ["basic"])
    left = fig.axes[0]
    assert len(left.patches) == 2 * 2
    assert all(c.errorbar is None for c in left.containers if isinstance(c, BarContainer))
    assert "none, one seed" in left.get_title() and "no spread" not in left.get_title()


def test_soft_minus_hard_markdown_does_not_call_identical_seeds_one_seed():
    three = _runs_frame(seeds=(0, 1, 2), model_types=("basic",))
    d = L.paired_differences(three)
    d.loc[d.metric == "ece", ["difference", "se", "ses_from_zero"]] = [0.0, 0.0, np.nan]
    md = L.soft_minus_hard_markdown(d, ["basic"])
    assert "- basic, ECE: soft - hard = +0.0000 (identical over 3 seeds" in md
    assert "one seed" not in md


def test_plot_differences_draws_each_comparison_per_model_type_with_the_papers_soft_minus_hard():
    runs = _runs_frame(seeds=(0, 1, 2))
    diffs = L.paired_differences(runs)
    fig = L.plot_differences(diffs, ["basic", "sngp", "duq"])
    # SVHN is not in the runs: no panel for it; the four others are drawn
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["accuracy (%): higher is better", "ECE: lower is better",
                      "OOD AUROC (Fashion-MNIST): higher is better",
                      "FGSM attack decrease: lower is better"]
    acc, ece = fig.axes[0], fig.axes[1]
    points = [c for c in acc.containers if isinstance(c, ErrorbarContainer)]
    assert len(points) == 2  # soft - hard, label_smoothing - hard (no mixup runs)
    soft = diffs[(diffs.metric == "accuracy") & (diffs.comparison == "soft - hard")]
    np.testing.assert_allclose(np.asarray(points[0].lines[0].get_xdata(), float),
                               soft["difference"].to_numpy())  # +1 each
    seg = points[0].lines[2][0].get_segments()[0]
    assert seg[1, 0] - seg[0, 0] == pytest.approx(4 * float(soft["se"].iloc[0]))  # ±2 s.e.
    # the paper's soft - hard: basic +1.55 accuracy points; DUQ's ECE is of another output
    marks = [ln for ln in acc.lines if ln.get_label().startswith("paper")]
    assert marks and marks[0].get_xdata()[0] == pytest.approx(82.917 - 81.367)
    ece_marks = [ln for ln in ece.lines if ln.get_label().startswith("paper")][0]
    assert len(ece_marks.get_xdata()) == 2  # basic and SNGP; not DUQ
    assert "±2 s.e. over 3 seeds" in fig._suptitle.get_text()
    plt.close(fig)
    one = L.plot_differences(L.paired_differences(_runs_frame(seeds=(0,))), ["basic"])
    assert "none, one seed" in one._suptitle.get_text()
    plt.close(one)


def test_plot_reliability_puts_at_most_three_model_types_across():
    types = ["basic", "dropout_noaug", "dropout_aug", "sngp", "duq"]
    runs = [_run_result(mt, "hard", 0) for mt in types]
    fig = L.plot_reliability(runs, types)
    axes = np.array(fig.axes).reshape(4, 3)  # two groups of (reliability row, proportion row)
    assert [ax.get_title() for ax in axes[0]] == [L.MODEL_TYPES[t].label for t in types[:3]]
    assert [ax.get_title() for ax in axes[2][:2]] == [L.MODEL_TYPES[t].label for t in types[3:]]
    assert not axes[2][2].axison and not axes[3][2].axison  # the sixth cell stays empty
    assert axes[2][0].get_ylabel().startswith("accuracy") and not axes[2][1].get_ylabel()
