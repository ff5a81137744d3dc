import os

import pytest
import numpy as np
import torch

from softlib.cache import Entry, ResultCache, config_key


def test_key_depends_on_every_config_value_and_not_on_order():
    a = config_key("train", {"lr": 0.1, "epochs": 3})
    assert a == config_key("train", {"epochs": 3, "lr": 0.1})
    assert a != config_key("train", {"lr": 0.01, "epochs": 3})
    assert a != config_key("eval", {"lr": 0.1, "epochs": 3})


def test_get_or_compute_computes_once_and_round_trips(tmp_path):
    cache = ResultCache(tmp_path)
    calls = []
    lin = torch.nn.Linear(3, 2)

    def compute():
        calls.append(1)
        return Entry(arrays={"logits": np.arange(6.0).reshape(3, 2)}, meta={"acc": 0.5},
                     state_dict=lin.state_dict())

    first = cache.get_or_compute("train", {"lr": 0.1}, compute)
    second = cache.get_or_compute("train", {"lr": 0.1}, compute)
    assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
    np.testing.assert_array_equal(first.arrays["logits"], second.arrays["logits"])
    assert second.meta == {"acc": 0.5}
    assert torch.equal(second.state_dict["weight"], lin.weight)
    cache.get_or_compute("train", {"lr": 0.2}, compute)
    assert len(calls) == 2


def test_interrupted_compute_leaves_no_entry(tmp_path):
    cache = ResultCache(tmp_path)

    def boom():
        raise KeyboardInterrupt

    try:
        cache.get_or_compute("train", {"lr": 0.1}, boom)
    except KeyboardInterrupt:
        pass
    assert not cache.has("train", {"lr": 0.1})
    # a half-written entry folder (no meta.json) is not a hit either
    d = cache.path("train", {"lr": 0.1})
    d.mkdir(parents=True)
    (d / "arrays.npz").write_bytes(b"partial")
    assert not cache.has("train", {"lr": 0.1})
    entry = cache.get_or_compute("train", {"lr": 0.1}, lambda: Entry(meta={"ok": True}))
    assert entry.meta == {"ok": True} and cache.load("train", {"lr": 0.1}).meta == {"ok": True}
    leftovers = [p for p in os.listdir(d.parent) if p.startswith(".")]
    assert leftovers == []


def test_budget_exempt_work_runs_past_the_deadline(tmp_path):
    from softlib.cache import BudgetExhausted, budget_exempt, set_deadline
    cache = ResultCache(tmp_path)
    set_deadline(0)
    try:
        with pytest.raises(BudgetExhausted):
            cache.get_or_compute("k", {"a": 1}, lambda: Entry(meta={"v": 1}))
        with budget_exempt():
            with budget_exempt():  # nested: still exempt after the inner one ends
                pass
            assert cache.get_or_compute("k", {"a": 2}, lambda: Entry(meta={"v": 2})).meta["v"] == 2
        with pytest.raises(BudgetExhausted):  # the exemption ends with its block
            cache.get_or_compute("k", {"a": 3}, lambda: Entry(meta={"v": 3}))
        set_deadline(0, strict=True)  # a check that computes nothing: no exemption
        with budget_exempt(), pytest.raises(BudgetExhausted):
            cache.get_or_compute("k", {"a": 4}, lambda: Entry(meta={"v": 4}))
    finally:
        set_deadline(None)


def test_a_missing_result_names_its_config_and_the_nearest_cached_one(tmp_path):
    """Why a result is not in the cache: the budget's exception carries the entry asked for,
    and ``nearest`` finds the cached entry of that kind that differs in the fewest settings
    (nested settings by dotted path; a tuple equals the list the cache stores)."""
    from softlib.cache import BudgetExhausted, config_key, set_deadline
    cache = ResultCache(tmp_path)
    base = {"data": "a" * 24, "train": {"lr": 0.1, "epochs": 3, "milestones": (1, 2)}}
    cache.save("fit", base, Entry(meta={"v": 1}))
    other = dict(base, data="b" * 24, train=dict(base["train"], lr=0.2))
    cache.save("fit", other, Entry(meta={"v": 2}))
    cache.save("eval", {"data": "c" * 24}, Entry())
    want = dict(base, data="d" * 24, train=dict(base["train"], milestones=[1, 2]))
    set_deadline(0)
    try:
        with pytest.raises(BudgetExhausted) as err:
            cache.get_or_compute("fit", want, lambda: Entry())
    finally:
        set_deadline(None)
    assert (err.value.kind, err.value.config) == ("fit", want)
    key, diff = cache.nearest("fit", want)
    assert key == config_key("fit", base)
    assert diff == [("data", "d" * 24, "a" * 24)]
    # a missing setting is a difference too; no entry of the kind: None
    key, diff = cache.nearest("fit", dict(want, extra=1))
    assert ("extra", 1, None) in diff and len(diff) == 2
    assert cache.nearest("attack", want) is None
    assert cache.nearest("fit", base)[1] == []


def test_float16_valued_arrays_are_stored_in_half_the_bytes_and_read_back_exactly(tmp_path):
    cache = ResultCache(tmp_path)
    rng = np.random.default_rng(0)
    full = rng.normal(0, 5, (500, 10)).astype(np.float32)
    rounded = full.astype(np.float16).astype(np.float32)
    rounded[0, :3] = [np.nan, np.inf, -np.inf]  # survive the round trip: stored as float16 too
    arrays = {"full": full, "rounded": rounded, "ints": np.arange(5),
              "f64": np.linspace(0, 1, 7), "big": np.array([1e6, 0.5], np.float32)}
    path = cache.save("k", {"a": 1}, Entry(arrays=arrays))
    with np.load(path / "arrays.npz") as z:
        stored = {k: z[k].dtype for k in z.files}
    assert stored == {"full": np.float32, "rounded": np.float16, "ints": np.int64,
                      "f64": np.float64, "big": np.float32}
    back = cache.load("k", {"a": 1}).arrays
    for k, a in arrays.items():
        assert back[k].dtype == a.dtype
        np.testing.assert_array_equal(back[k], a)
    # half the bytes: the point of storing rounded predictions
    only_full = cache.save("k", {"a": 2}, Entry(arrays={"x": full}))
    only_rounded = cache.save("k", {"a": 3}, Entry(arrays={"x": rounded}))
    assert (only_rounded / "arrays.npz").stat().st_size < 0.55 * (only_full / "arrays.npz").stat().st_size


def test_bundle_identity_reads_arrays_as_the_cache_does(tmp_path):
    """An entry whose arrays.npz holds float32 (written before the float16 storage) is the same
    entry as one holding the float16 that stores the same values."""
    from softlib.book.bundle import _same_arrays
    a = np.array([[0.5, -2.25, np.nan]], np.float32)
    np.savez(tmp_path / "old.npz", x=a)
    np.savez(tmp_path / "new.npz", x=a.astype(np.float16))
    np.savez(tmp_path / "other.npz", x=a + 1)
    np.savez(tmp_path / "f64.npz", x=a.astype(np.float64))
    assert _same_arrays(tmp_path / "old.npz", tmp_path / "new.npz")
    assert not _same_arrays(tmp_path / "old.npz", tmp_path / "other.npz")
    assert not _same_arrays(tmp_path / "old.npz", tmp_path / "f64.npz")


def test_atomic_writes_give_files_the_mode_a_direct_write_would(tmp_path):
    """The temporary file of an atomic write is 0600 (mkstemp); the file it becomes is not:
    manifests, data files and bundles are readable by whoever could read a plain write."""
    from softlib._io import save_json
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    save_json(tmp_path / "m.json", {"a": 1})
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
