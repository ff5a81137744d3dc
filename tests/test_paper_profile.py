"""The ``paper`` profile cannot be executed on a CPU (it needs days of GPU time), so these tests
walk its configuration through the same study functions the notebooks call and take one real
optimisation step per distinct model: a typo or a missing preset in the paper profile fails here,
not after hours on a GPU."""
import numpy as np
import pytest

from softlib import profiles
from softlib.studies import laing as L
from softlib.studies import peterson as P
from softlib.train import TrainConfig, _default_build, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def _one_step(config: TrainConfig) -> float:
    """Build the config's model and take a single step on 4 random images; returns the loss."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    t = np.full((4, 10), 0.1, dtype=np.float32)
    short = config.replace(epochs=1, batch_size=4, warmup_epochs=0, milestones=[],
                           early_stopping_patience=None)
    model = _default_build(short)
    res = fit(model, x, t, short, device="cpu", progress=False)
    return float(res.history["train_loss"][-1])


PAPER_GEN = profiles.resolve("paper", "generalisation")
PAPER_ALT = profiles.resolve("paper", "alternatives")
PAPER_CAL = profiles.resolve("paper", "calibration_ood")


@pytest.mark.parametrize("arch", P.parse_archs(PAPER_GEN["archs"]), ids=lambda a: a.name)
def test_every_paper_architecture_has_both_schedules_and_trains_one_step(arch):
    assert P.paper_family(arch.name) is not None, "the paper-vs-run tables need the family"
    for lr in PAPER_GEN["lr"]:
        cfg = P.scratch_config(arch, lr, PAPER_GEN["epochs"], PAPER_GEN["batch_size"],
                               amp=PAPER_GEN["amp"])
        assert cfg.epochs == PAPER_GEN["epochs"] and cfg.optimizer == "adam"
    pre = P.pretrain_config(arch, PAPER_ALT["pretrain_epochs"], PAPER_ALT["batch_size"],
                            amp=PAPER_ALT["amp"])
    assert pre.epochs == P.REPO_SCHEDULES[arch.name][2]
    assert np.isfinite(_one_step(cfg))


def test_paper_alternatives_expand_to_every_method_and_mixup_alpha():
    variants = P.method_variants(PAPER_ALT)
    for method in P.METHODS:
        alphas = sorted(a for m, a in variants if m == method)
        if method.startswith("mixup"):
            assert alphas == sorted(PAPER_ALT["mixup_alpha"])
        else:
            assert alphas == [None]


@pytest.mark.parametrize("model_type", PAPER_CAL["model_types"])
def test_every_laing_model_type_and_condition_configures_and_steps(model_type):
    conds = PAPER_CAL["label_conditions"] + PAPER_CAL["extra_conditions"]
    configs = [L.train_config(PAPER_CAL, model_type, c, 0, mix_prob=0.3, smoothing_eps=0.05)
               for c in conds]
    warmup, milestones = L.schedule_for(PAPER_CAL["epochs"])
    for cfg in configs:
        assert cfg.epochs == PAPER_CAL["epochs"] and cfg.milestones == milestones
        assert cfg.warmup_epochs == warmup and cfg.early_stopping_patience is not None
    # the mix branch of the first mixed condition exercises mixing; plain covers the rest
    assert np.isfinite(_one_step(configs[0]))
    mixed = next(c for c in configs if c.mix != "none")
    assert np.isfinite(_one_step(mixed))
