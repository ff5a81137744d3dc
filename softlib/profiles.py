"""The named profiles every section runs under: one place, plain data.

* ``smoke``: synthetic fixture data and tiny models; seconds per section. Checks that the book
  runs end to end (CI). Its numbers are **not results**.
* ``cpu``: real data, small models and short schedules; the whole book fits a newcomer's 2-core
  laptop in about 90 minutes.
* ``paper``: the seeds' full protocols; meant for a GPU.

Each profile maps a section name to that section's parameters. Notebooks call
:func:`resolve` with their papermill overrides; an unknown profile, section or parameter is a
clear error listing the valid ones.
"""
from __future__ import annotations

import copy
from typing import Any


class ProfileError(ValueError):
    """An unknown profile, section or parameter."""


# Architectures are given as (label, build name, build knobs) so small profiles can shrink them.
_PETERSON_PAPER_ARCHS = [
    ["VGG-15-BN-64", "vgg_15_BN_64", {}],
    ["ResNet-110", "resnet_basic_110", {}],
    ["WRN-28-10", "wrn_28_10", {}],
    ["PreAct-ResNet-164", "resnet_preact_bottleneck_164", {}],
    ["ResNeXt-29 8x64d", "resnext_29_8x64d", {}],
    ["DenseNet-BC-100-12", "densenet_BC_100_12", {}],
    ["PyramidNet-110-270", "pyramidnet_basic_110_270", {}],
    ["Shake-Shake-26 2x64d", "shake_shake_26_2x64d_SSI", {}],
]

# cpu: a small ResNet and a small VGG; an optional 4th element sets that architecture's own
# schedule length (the faster VGG trains longer than the section's default).
_CPU_ARCHS_SCRATCH = [
    ["ResNet-20", "resnet_20", {}],
    ["VGG-15-BN (w16)", "vgg", {"width": 16}, {"epochs": 20}],
]
_CPU_ARCHS_FINETUNE = [
    ["ResNet-20", "resnet_20", {}],
    ["VGG-15-BN (w16)", "vgg", {"width": 16}, {"pretrain_epochs": 8, "finetune_epochs": 3}],
]

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {
        "description": "synthetic fixture data, tiny models, seconds per section: checks that "
                       "the book runs; its numbers are NOT results",
        "synthetic_data": True,
        "sections": {
            "cifar10h_data": {"gallery_per_group": 2},
            "generalisation": {
                "archs": [["ResNet-8 (w4)", "resnet", {"depth": 8, "width": 4}]],
                "folds": 2, "epochs": 1, "lr": [0.01], "batch_size": 32, "train_subset": 200,
                "amp": False,
                "eval_subset": 64, "corruption_subset": 20, "corruption_severities": [1, 5],
                "corruptions": ["gaussian_noise", "contrast"],
            },
            "alternatives": {
                "archs": [["ResNet-8 (w4)", "resnet", {"depth": 8, "width": 4}]],
                "folds": 2, "pretrain_epochs": 1, "finetune_epochs": 1, "lr": [0.01],
                "mixup_alpha": [0.2], "batch_size": 32, "pretrain_subset": 64,
                "train_subset": 200, "amp": False,
            },
            "adversarial": {"eps_sweep": [4, 8], "pgd_eps": 4, "pgd_steps": 3,
                            "pgd_step_size": 1.0, "attack_subset": 32, "pgd_subset": 16},
            "calibration_ood": {
                "model_types": ["basic", "dropout_noaug", "dropout_aug", "sngp", "duq"],
                "label_conditions": ["hard", "soft", "hard_mixup", "soft_mixup",
                                     "hard_cutmix", "soft_cutmix"],
                "extra_conditions": ["label_smoothing"],
                "seeds": [0], "epochs": 1, "width": 4, "batch_size": 32, "fgsm_eps": 0.005,
                "train_subset": 64, "split_sizes": [64, 100, 100], "lr": 0.05, "mix_alpha": 0.2,
                "early_stopping_patience": 1, "amp": False,
            },
            "imagenet_humans": {"bootstrap_trials": 50},
            "compute": {"quick": True},
        },
    },
    "cpu": {
        "description": "real data, small models and short schedules: the whole book in about "
                       "90 minutes on a 2-core CPU",
        "synthetic_data": False,
        "sections": {
            "cifar10h_data": {"gallery_per_group": 6},
            "generalisation": {
                # Measured on a 2-core AVX512-BF16 CPU with bf16 autocast (amp): ResNet-20 trains
                # at ~800 img/s, VGG-15-BN at width 16 at ~1,700 img/s, so VGG gets more epochs in
                # the same time (per-architecture overrides, 4th element). On one fold, VGG's
                # soft-vs-hard gap grew from ~0.05 nats (10 epochs) to ~0.08 nats (25 epochs).
                # When another process shares the 2 cores, 2 torch threads drop ~8x (OpenMP
                # oversubscription); OMP_NUM_THREADS=1 keeps about half the speed.
                "archs": _CPU_ARCHS_SCRATCH,
                "folds": 3, "epochs": 8, "lr": [0.002], "batch_size": 128, "train_subset": None,
                "amp": True, "eval_subset": 2000, "corruption_subset": 100,
                "corruption_severities": [1, 2, 3, 4, 5],
                "corruptions": ["gaussian_noise", "defocus_blur", "fog", "contrast",
                                "jpeg_compression"],
            },
            "alternatives": {
                "archs": _CPU_ARCHS_FINETUNE,
                "folds": 3, "pretrain_epochs": 3, "finetune_epochs": 1, "lr": [0.0005],
                "mixup_alpha": [0.2], "batch_size": 128, "pretrain_subset": 50000,
                "train_subset": None, "amp": True,
            },
            "adversarial": {"eps_sweep": [4, 5, 6, 7, 8], "pgd_eps": 4, "pgd_steps": 10,
                            "pgd_step_size": 1.0, "attack_subset": 3000, "pgd_subset": 600},
            "calibration_ood": {
                "model_types": ["basic", "dropout_noaug", "dropout_aug", "sngp", "duq"],
                "label_conditions": ["hard", "soft", "hard_mixup", "soft_mixup",
                                     "hard_cutmix", "soft_cutmix"],
                "extra_conditions": ["label_smoothing"],
                # measured on 2 cores with bf16 autocast: ~990 img/s at width 8 (730 at width
                # 16), DUQ ~370 (its gradient penalty needs a double backward); 35 runs in
                # about 25 min leave three epochs at width 8
                "seeds": [0], "epochs": 3, "width": 8, "batch_size": 64, "fgsm_eps": 0.005,
                "train_subset": 8000, "split_sizes": [8000, 500, 1500], "lr": 0.05,
                "mix_alpha": 0.2, "early_stopping_patience": 2, "amp": True,
            },
            "imagenet_humans": {"bootstrap_trials": 1000},
            "compute": {"quick": False},
        },
    },
    "paper": {
        "description": "the seeds' full protocols (8 architectures, 10 folds, 150 epochs; "
                       "Laing's 230-epoch schedule over 5 seeds): meant for a GPU",
        "synthetic_data": False,
        "sections": {
            "cifar10h_data": {"gallery_per_group": 8},
            "generalisation": {
                "archs": _PETERSON_PAPER_ARCHS, "folds": 10, "epochs": 150,
                "lr": [0.2, 0.1, 0.01, 0.001], "batch_size": 128, "train_subset": None,
                "amp": "auto",
                "eval_subset": 50000, "corruption_subset": 10000,
                "corruption_severities": [1, 2, 3, 4, 5], "corruptions": "all",
            },
            "alternatives": {
                "archs": _PETERSON_PAPER_ARCHS, "folds": 10, "pretrain_epochs": None,
                "finetune_epochs": 150, "lr": [0.1, 0.01, 0.001],
                "mixup_alpha": [round(0.1 * i, 1) for i in range(1, 11)], "batch_size": 128,
                "pretrain_subset": 50000, "train_subset": None, "amp": "auto",
            },
            "adversarial": {"eps_sweep": [4, 5, 6, 7, 8], "pgd_eps": 4, "pgd_steps": 40,
                            "pgd_step_size": 1.0, "attack_subset": 10000, "pgd_subset": 10000},
            "calibration_ood": {
                "model_types": ["basic", "dropout_noaug", "dropout_aug", "sngp", "duq"],
                "label_conditions": ["hard", "soft", "hard_mixup", "soft_mixup",
                                     "hard_cutmix", "soft_cutmix"],
                "extra_conditions": ["label_smoothing"],
                "seeds": [0, 1, 2, 3, 4], "epochs": 230, "width": 16, "batch_size": 64,
                "fgsm_eps": 0.005, "train_subset": 8000, "split_sizes": [8000, 500, 1500],
                "lr": 0.05, "mix_alpha": 0.2,
                "early_stopping_patience": 20, "amp": "auto",
            },
            "imagenet_humans": {"bootstrap_trials": 1000},
            "compute": {"quick": False},
        },
    },
}


def profile_names() -> list[str]:
    return list(PROFILES)


def get_profile(name: str) -> dict[str, Any]:
    """The profile called ``name`` (a deep copy), or a ProfileError listing the valid names."""
    if name not in PROFILES:
        raise ProfileError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}")
    return copy.deepcopy(PROFILES[name])


def resolve(profile: str, section: str, **overrides: Any) -> dict[str, Any]:
    """A section's parameters under ``profile`` with papermill overrides applied.

    Overrides whose value is ``None`` mean "use the profile's value". Unknown names are errors,
    so a typo in ``papermill -p`` cannot silently do nothing. An override also replaces the
    per-architecture values of the same parameter.
    """
    sections = get_profile(profile)["sections"]
    if section not in sections:
        raise ProfileError(f"unknown section {section!r}; valid sections: {', '.join(sections)}")
    params = sections[section]
    unknown = sorted(k for k in overrides if k not in params)
    if unknown:
        raise ProfileError(
            f"unknown parameter(s) {', '.join(unknown)} for section {section!r}; "
            f"valid parameters: {', '.join(sorted(params))}")
    explicit = {k: v for k, v in overrides.items() if v is not None}
    params.update(explicit)
    # an architecture's own schedule length (4th element of an ``archs`` entry) gives way to an
    # explicit override of the same parameter: ``-p epochs=30`` means 30 epochs for every model
    if "archs" not in explicit:
        for arch in params.get("archs") or []:
            if len(arch) == 4:
                arch[3] = {k: v for k, v in arch[3].items() if k not in explicit}
    return params
