"""The ``paper`` and ``gpu`` profiles cannot be executed on a CPU (they need a GPU), so these
tests walk their configurations through the same study functions the notebooks call and take one
real optimisation step per distinct model: a typo or a missing preset in a GPU profile fails
here, not after hours on a GPU."""
import numpy as np
import pytest

from softlib.book import profiles
from softlib.studies import laing as L
from softlib.studies import peterson as P
from softlib.train import TrainConfig, _default_build, fit, lr_at


pytestmark = pytest.mark.usefixtures("one_thread")

GPU_PROFILES = ["paper", "gpu"]


def _one_step(config: TrainConfig) -> float:
    """Build the config's model and take a single step on 4 random images; returns the loss."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    t = np.full((4, 10), 0.1, dtype=np.float32)
    short = config.replace(epochs=1, batch_size=4, warmup_epochs=0, milestones=[],
                           early_stopping_patience=None, keep_best=False)
    model = _default_build(short)
    res = fit(model, x, t, short, device="cpu", progress=False)
    return float(res.history["train_loss"][-1])


def _archs(profile):
    """(profile, arch) for every architecture of the profile's generalisation and alternatives
    sections (each distinct build once)."""
    seen, out = set(), []
    for section in ("generalisation", "alternatives"):
        for a in P.parse_archs(profiles.resolve(profile, section)["archs"]):
            if (a.name, a.knobs) not in seen:
                seen.add((a.name, a.knobs))
                out.append(pytest.param(profile, a, id=f"{profile}-{a.name}"))
    return out


def test_gpu_profiles_say_they_need_a_gpu():
    for name in GPU_PROFILES:
        assert profiles.get_profile(name)["requires_gpu"] is True
    for name in ("smoke", "cpu"):
        assert profiles.get_profile(name)["requires_gpu"] is False


@pytest.mark.parametrize("profile,arch", [p for prof in GPU_PROFILES for p in _archs(prof)])
def test_every_architecture_has_both_schedules_and_trains_one_step(profile, arch):
    gen = profiles.resolve(profile, "generalisation")
    alt = profiles.resolve(profile, "alternatives")
    assert P.paper_family(arch.name) is not None, "the paper-vs-run tables need the family"
    assert arch.name in P.REPO_SCHEDULES, "only the paper's architectures in the GPU profiles"
    cfg = None
    for lr in gen["lr"]:
        epochs = arch.param(gen, "epochs")
        cfg = P.scratch_config(arch, lr, epochs, gen["batch_size"], amp=gen["amp"],
                               schedule=gen["schedule"])
        assert cfg.epochs == epochs > 0 and cfg.optimizer == "adam" and cfg.lr == lr
        if gen["schedule"] == "cosine":
            assert cfg.schedule == "cosine" and cfg.schedule_epochs is None
    pre_epochs = arch.param(alt, "pretrain_epochs")
    pre = P.pretrain_config(arch, pre_epochs, alt["batch_size"], amp=alt["amp"])
    assert pre.epochs == (P.REPO_SCHEDULES[arch.name][2] if pre_epochs is None else pre_epochs)
    for lr in alt["lr"]:
        ft = P.scratch_config(arch, lr, arch.param(alt, "finetune_epochs"), alt["batch_size"],
                              mix="mixup", mix_alpha=alt["mixup_alpha"][0], amp=alt["amp"],
                              schedule=alt["schedule"])
        assert ft.epochs > 0 and ft.optimizer == "adam"
    assert np.isfinite(_one_step(cfg))
    assert np.isfinite(_one_step(pre))


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_gpu_peterson_sections_run_every_fold_and_use_the_paper_architectures(profile):
    for section in ("generalisation", "alternatives"):
        prm = profiles.resolve(profile, section)
        assert prm["folds"] == 10 and prm["train_subset"] is None
        assert len(P.parse_archs(prm["archs"])) >= 2
    adv = profiles.resolve(profile, "adversarial")
    assert adv["attack_subset"] >= 10 * 1000 and max(adv["eps_sweep"]) == 8


@pytest.mark.parametrize("profile", GPU_PROFILES)
def test_alternatives_expand_to_every_method_and_mixup_alpha(profile):
    alt = profiles.resolve(profile, "alternatives")
    variants = P.method_variants(alt)
    for method in P.METHODS:
        alphas = sorted(a for m, a in variants if m == method)
        if method.startswith("mixup"):
            assert alphas == sorted(alt["mixup_alpha"])
        else:
            assert alphas == [None]


@pytest.mark.parametrize("profile,model_type", [
    (prof, mt) for prof in GPU_PROFILES
    for mt in profiles.resolve(prof, "calibration_ood")["model_types"]])
def test_every_laing_model_type_and_condition_configures_and_steps(profile, model_type):
    cal = profiles.resolve(profile, "calibration_ood")
    assert cal["width"] == 16 and len(cal["seeds"]) >= 3
    conds = cal["label_conditions"] + cal["extra_conditions"]
    configs = [L.train_config(cal, model_type, c, 0, mix_prob=0.3, smoothing_eps=0.05)
               for c in conds]
    warmup, milestones = L.schedule_for(cal["epochs"])
    for cfg in configs:
        assert cfg.epochs == cal["epochs"] and cfg.milestones == milestones
        assert cfg.warmup_epochs == warmup
        # the best-validation weights are kept: by early stopping (gpu) or after the whole
        # schedule (paper, Laing's protocol)
        assert cfg.early_stopping_patience is not None or cfg.keep_best
    # the mix branch of the first mixed condition exercises mixing; plain covers the rest
    assert np.isfinite(_one_step(configs[0]))
    mixed = next(c for c in configs if c.mix != "none")
    assert np.isfinite(_one_step(mixed))


def test_paper_laing_trains_all_230_epochs_and_keeps_the_best_checkpoint():
    from softlib.book import profiles
    from softlib.studies import laing
    p = profiles.resolve("paper", "calibration_ood")
    assert p["epochs"] == 230 and p["early_stopping_patience"] is None
    cfg = laing.train_config(p, "basic", "soft", 0, 0.3, 0.0)
    assert cfg.epochs == 230 and cfg.early_stopping_patience is None and cfg.keep_best
    assert cfg.milestones == list(laing.PAPER_MILESTONES)


def test_paper_pgd_sweeps_every_bound_the_paper_explored():
    from softlib.book import profiles
    assert profiles.resolve("paper", "adversarial")["pgd_eps"] == [4, 5, 6, 7, 8]


def test_paper_sections_2_and_3_use_the_repository_recipe_for_at_most_150_epochs():
    for section, epochs in (("generalisation", "epochs"), ("alternatives", "finetune_epochs")):
        prm = profiles.resolve("paper", section)
        assert prm["schedule"] == "repo" and prm["heldout_per_epoch"] is True
        assert prm[epochs] == 150
    arch = {a.name: a for a in P.parse_archs(profiles.resolve("paper", "generalisation")["archs"])}
    cfg = {n: P.scratch_config(a, 0.1, 150, 128, schedule="repo") for n, a in arch.items()}
    assert all(c.optimizer == "adam" and c.lr == 0.1 and c.epochs == 150 for c in cfg.values())
    # the repository's weight decay, batch size and augmentation per architecture
    assert {n for n, c in cfg.items() if c.weight_decay == 5e-4} == {"wrn_28_10", "resnext_29_8x64d"}
    assert {n for n, c in cfg.items() if c.batch_size == 64} == {"densenet_BC_100_12"}
    assert cfg["shake_shake_26_2x64d_SSI"].augment == "crop_flip_cutout16"
    assert all(c.augment == "crop_flip" for n, c in cfg.items() if not n.startswith("shake"))
    # step milestones inside the cap kept; past it, never reached; Shake-Shake keeps its horizon
    vgg, wrn, rnx = cfg["vgg_15_BN_64"], cfg["wrn_28_10"], cfg["resnext_29_8x64d"]
    assert (vgg.schedule, vgg.milestones, vgg.gamma) == ("multistep", [80, 120], 0.1)
    assert (wrn.schedule, wrn.milestones, wrn.gamma) == ("multistep", [60, 120], 0.2)
    assert rnx.schedule == "constant"
    ss = cfg["shake_shake_26_2x64d_SSI"]
    assert (ss.schedule, ss.schedule_epochs) == ("cosine", 1800)
    assert lr_at(ss, 150) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 150 / 1800)))
    assert lr_at(vgg, 100) == pytest.approx(0.01) and lr_at(wrn, 130) == pytest.approx(0.1 * 0.04)
    # the small profiles' cosine schedule keeps its cache key (no schedule_epochs in it)
    small = P.scratch_config(arch["vgg_15_BN_64"], 0.1, 20, 128)
    assert small.schedule == "cosine" and "schedule_epochs" not in small.to_dict()
    with pytest.raises(ValueError, match="schedule"):
        P.scratch_config(arch["vgg_15_BN_64"], 0.1, 20, 128, schedule="linear")
