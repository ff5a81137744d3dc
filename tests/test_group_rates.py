"""How fast the studies' stacked groups trained, read back out of results bundles
(benchmarks/group_rates.py), and how `plan` costs groups from such records: the median group
per architecture and size, entries trained alone skipped, another GPU's stacked record used
only where the planned device has none of its own."""
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from softlib.book import bundle
from softlib.book import plan as PL
from softlib.cache import Entry, ResultCache, config_key

ROOT = Path(__file__).resolve().parents[1]


def _meta(arch: str, stacked: int | None, rate: float, augment: str = "none") -> dict:
    """A trained entry's meta.json as the cache stores it (config, kind, meta)."""
    meta = {"result": {"images_per_second": rate, "seconds": 1.0}}
    if stacked is not None:
        meta["stacked"] = stacked
    return {"config": {"train": {"arch": arch, "augment": augment, "mix": "none"}},
            "kind": "laing_train", "meta": meta}


def test_group_rates_take_the_median_group_per_architecture_and_size():
    metas = ([_meta("net_a", 3, 900.0)] * 3            # one group of 3: its entries share a rate
             + [_meta("net_a", 3, 1500.0, "laing")] * 3
             + [_meta("net_a", 3, 1000.0)] * 3
             + [_meta("net_a", 7, 4000.0)] * 7          # another size: its own row
             + [_meta("net_b", None, 50_000.0), _meta("net_b", 1, 60_000.0)])  # alone: skipped
    rows = PL.stacked_group_rates(metas)
    assert [(r["arch"], r["models"]) for r in rows] == [("net_a", 3), ("net_a", 7)]
    three = rows[0]
    assert three["value"] == 1000.0 and three["groups"] == 3
    assert (three["min"], three["max"]) == (900.0, 1500.0)
    assert three["role"] == "train_stacked" and three["unit"] == "img/s"
    assert "laing/none" in three["note"] and "none/none" in three["note"]
    assert rows[1]["value"] == 4000.0 and rows[1]["groups"] == 1


def _record(d: Path, name: str, gpu: str, rows: list[dict]) -> None:
    (d / name).write_text(json.dumps({"machine": {"gpu": gpu}, "rows": rows}))


def test_plan_borrows_another_gpus_stacked_record_only_where_its_own_has_none(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(PL, "BENCHMARKS", tmp_path)
    _record(tmp_path, "a-archs.json", "GPU A", [
        {"arch": "n1", "role": "train", "unit": "img/s", "value": 1000.0},
        {"arch": "n2", "role": "train", "unit": "img/s", "value": 500.0},
        {"arch": "n1", "role": "train_stacked", "models": 10, "value": 5000.0},
        {"arch": "n1", "role": "train_stacked", "models": 3, "value": 1200.0}])  # smaller group
    _record(tmp_path, "b-groups.json", "GPU B", [
        {"arch": "n1", "role": "train_stacked", "models": 21, "value": 9000.0},
        {"arch": "n2", "role": "train_stacked", "models": 12, "value": 3000.0},
        {"arch": "n2", "role": "train_stacked", "models": 20, "value": 4000.0}])
    tp = PL.recorded_throughput("GPU A")
    assert tp.stacked["n1"] == (10, 5000.0)          # its own, the largest group's
    assert tp.stacked["n2"] == (20, 4000.0)          # GPU B's largest group
    assert tp.stacked_elsewhere == {"n2": "GPU B"}
    assert "b-groups.json (stacked n2: on GPU B)" in tp.source
    job = PL.Job("s", "train", "k", {}, "x", arch="n2", train_images=4000.0 * 5, group="g",
                 stack="auto")
    assert PL.job_seconds(job, tp, group_size=21)[0] == pytest.approx(5)
    assert PL.job_seconds(job, tp, group_size=19)[0] == pytest.approx(4000.0 * 5 / 500)
    # GPU B alone has no per-architecture rows: still an error, not a borrowed estimate
    with pytest.raises(ValueError, match="no per-architecture throughput"):
        PL.recorded_throughput("GPU B")


def _bundle_of_groups(tmp_path: Path) -> Path:
    """A bundle of a 'slice' on 'GPU X' that trained a group of 3 and one model alone."""
    src = tmp_path / "cache"
    cache = ResultCache(src)
    keys = []
    for i, (stacked, rate) in enumerate([(3, 2400.0)] * 3 + [(None, 800.0)]):
        cfg = {"train": {"arch": "net_a", "augment": "none", "mix": "none", "seed": i}}
        meta = {"result": {"images_per_second": rate}}
        if stacked:
            meta["stacked"] = stacked
        cache.save("laing_train", cfg, Entry(arrays={"x": np.zeros(3)}, meta=meta))
        keys.append(("laing_train", config_key("laing_train", cfg)))
    runs = [{"device_name": "GPU W", "machine": "vm", "date": "2026-11-26T10:00:00Z",
             "trained": 1},
            {"device_name": "GPU X", "machine": "vm", "date": "2026-11-27T08:00:00Z",
             "trained": 3}]
    bundle.update_manifest("smoke", "calibration_ood",
                           {"entries": keys, "complete": True, "computed_by": runs}, root=src)
    out = tmp_path / "results" / "cal.tar.gz"
    bundle.export_bundle("smoke", out, root=src)
    return out


def _script():
    spec = importlib.util.spec_from_file_location("group_rates",
                                                  ROOT / "benchmarks" / "group_rates.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_group_rates_script_records_a_bundles_groups_under_the_gpu_that_trained_them(
        tmp_path, capsys):
    path = _bundle_of_groups(tmp_path)
    man, metas = bundle.read_bundle_metas(path)
    assert len(metas) == 4 and all(k == "laing_train" for k, _ in metas)
    assert bundle.producing_device(man) == "GPU X"   # the latest run, not the first
    out = tmp_path / "rec.json"
    assert _script().main([str(path.parent), "--json", str(out), "--note", "a test"]) == 0
    rec = json.loads(out.read_text())
    assert rec["machine"] == {"gpu": "GPU X"} and rec["note"] == "a test"
    assert [(r["arch"], r["models"], r["value"]) for r in rec["rows"]] == [("net_a", 3, 2400.0)]
    assert "2,400 img/s" in capsys.readouterr().out
    # --gpu overrides the manifests
    assert _script().main([str(path), "--json", str(out), "--gpu", "GPU Y"]) == 0
    assert json.loads(out.read_text())["machine"] == {"gpu": "GPU Y"}


def test_reading_a_bundles_metas_refuses_what_import_refuses(tmp_path, capsys):
    bad = tmp_path / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("softlib-bundle/../../etc/meta.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(bundle.BundleError, match="unsafe"):
        bundle.read_bundle_metas(bad)
    torn = tmp_path / "torn.tar.gz"
    torn.write_bytes(b"not a gzip file")
    with pytest.raises(bundle.BundleError, match="cannot read"):
        bundle.read_bundle_metas(torn)
    out = tmp_path / "rec.json"
    assert _script().main([str(bad), "--json", str(out)]) == 1
    assert "unsafe" in capsys.readouterr().err and not out.exists()
    assert _script().main([str(tmp_path / "none"), "--json", str(out)]) == 1
