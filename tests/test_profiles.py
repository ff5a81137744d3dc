import pytest

from softlib.book import runner as book, profiles


def test_every_profile_defines_every_section_with_the_same_parameters():
    names = {s: set(p) for s, p in profiles.get_profile("paper")["sections"].items()}
    assert set(names) == set(book.SECTIONS)
    for prof in profiles.profile_names():
        secs = profiles.get_profile(prof)["sections"]
        assert {s: set(p) for s, p in secs.items()} == names, prof


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(profiles.ProfileError, match="valid profiles: smoke, cpu, paper"):
        profiles.get_profile("laptop")


def test_unknown_parameter_is_an_error_and_none_keeps_the_default():
    default = profiles.resolve("cpu", "generalisation")["epochs"]
    assert profiles.resolve("cpu", "generalisation", epochs=None)["epochs"] == default
    assert profiles.resolve("cpu", "generalisation", epochs=3)["epochs"] == 3
    with pytest.raises(profiles.ProfileError, match="epoch.*valid parameters"):
        profiles.resolve("cpu", "generalisation", epoch=3)


def test_resolve_returns_a_copy():
    profiles.resolve("cpu", "generalisation")["archs"].append("x")
    assert "x" not in profiles.resolve("cpu", "generalisation")["archs"]


def test_runner_rejects_bad_profile_and_parameter(capsys):
    assert book.main(["run", "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err
    assert book.main(["run", "--profile", "smoke", "--sections", "generalisation",
                      "-p", "epoch=3"]) == 2
    assert "unknown parameter(s) epoch" in capsys.readouterr().err


def test_an_explicit_override_beats_per_architecture_schedule_lengths():
    archs = profiles.resolve("cpu", "generalisation")["archs"]
    assert any(len(a) == 4 and "epochs" in a[3] for a in archs), "cpu sets epochs per arch"
    overridden = profiles.resolve("cpu", "generalisation", epochs=30)
    assert overridden["epochs"] == 30
    assert all("epochs" not in (a[3] if len(a) == 4 else {}) for a in overridden["archs"])
    # the profile itself is untouched
    assert profiles.resolve("cpu", "generalisation")["archs"] == archs


def test_gpu_profile_stores_sections_2_to_4_predictions_at_float16_and_no_other_profile_does():
    from softlib.train import LOGITS_PRECISIONS
    for name in profiles.profile_names():
        for section in ("generalisation", "alternatives"):
            p = profiles.resolve(name, section)["logits_precision"]
            assert p in LOGITS_PRECISIONS
            assert (p == "float16") == (name == "gpu"), (name, section)
        # Laing's grid keeps float32: its committed gpu results were stored so (their keys hold)
        assert "logits_precision" not in profiles.resolve(name, "calibration_ood")


def test_overrides_of_the_wrong_kind_are_refused_by_name():
    from softlib.book import profiles as P
    assert P.resolve("smoke", "generalisation", epochs=2.0)["epochs"] == 2  # YAML 2.0: whole
    assert P.resolve("smoke", "calibration_ood", lr=1)["lr"] == 1          # a number for a float
    assert P.resolve("smoke", "calibration_ood", amp=False)["amp"] is False  # 'auto' / bools: free
    for name, value, says in (("epochs", 1.5, "whole number"), ("epochs", "abc", "whole number"),
                              ("epochs", True, "whole number"), ("lr", 0.01, "a list"),
                              ("archs", "resnet", "a list")):
        with pytest.raises(P.ProfileError, match=f"'{name}'.*{says}"):
            P.resolve("smoke", "generalisation", **{name: value})
    with pytest.raises(P.ProfileError, match="'lr'.*a number"):
        P.resolve("smoke", "calibration_ood", lr="fast")
