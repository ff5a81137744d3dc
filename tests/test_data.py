"""softlib.data: loading, conversion, verification, errors, the restricted unpickler."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from softlib import data
from softlib.data import fixtures
from softlib.data.errors import DataCorruptError, DataMissingError
from softlib.data.fetch import convert_cifar10_batches, convert_cinic10, download, repack, write_split
from softlib.data.safe_pickle import UnsafePickleError, restricted_loads


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return fixtures.write_fixture_root(tmp_path_factory.mktemp("fx"), n_train=200)


@pytest.fixture
def root_copy(fixture_root, tmp_path):
    dst = tmp_path / "root"
    shutil.copytree(fixture_root, dst)
    return dst


# ------------------------------------------------------------------ loading the fixture

def test_every_dataset_loads_and_verifies(fixture_root):
    for name, spec in data.SPECS.items():
        report = data.verify(name, fixture_root)
        assert report["ok"] and report["synthetic"], name
        assert "SYNTHETIC FIXTURE" in data.provenance(name, fixture_root)
        if spec.kind == "images":
            for split in data.store.present_splits(name, fixture_root):
                s = data.load(name, split, fixture_root)
                assert s.images.dtype == np.uint8 and s.images.ndim == 4
                assert s.labels.dtype == np.int64 and len(s) == len(s.images)
                assert s.labels.min() >= 0 and s.labels.max() < 10


def test_cifar10h_fixture_and_alignment(fixture_root):
    h = data.load_cifar10h(fixture_root)
    test = data.load("cifar10", "test", fixture_root)
    assert h.counts.shape == h.probs.shape == (10000, 10)
    np.testing.assert_allclose(h.probs.sum(1), 1, atol=1e-12)
    assert (h.counts.argmax(1) == test.labels).mean() > 0.6   # votes follow the labels


def test_fixture_images_carry_class_signal(fixture_root):
    s = data.load("cifar10", "train", fixture_root)
    means = np.stack([s.images[s.labels == c].reshape(-1, 3).mean(0) for c in range(10)])
    feats = s.images.reshape(len(s), -1, 3).mean(1)
    pred = np.argmin(((feats[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    assert (pred == s.labels).mean() > 0.8   # nearest class-mean colour separates the classes


def test_available_and_info(fixture_root, tmp_path):
    assert data.available("cifar10", "train", fixture_root)
    assert data.available("cifar10h", root=fixture_root)
    assert not data.available("svhn", root=tmp_path)
    rows = {r["name"]: r for r in data.info(fixture_root)}
    assert rows["cifar10"]["present"] and rows["cifar10"]["splits"] == ["train", "test"]
    assert rows["cifar10"]["source"].startswith("SYNTHETIC")
    assert not {r["name"]: r for r in data.info(tmp_path)}["svhn"]["present"]


def test_cifar10_c_has_indices(fixture_root):
    s = data.load("cifar10_c", "gaussian_noise_3", fixture_root)
    train = data.load("cifar10", "train", fixture_root)
    np.testing.assert_array_equal(s.labels, train.labels[s.extra["indices"]])


# ------------------------------------------------------------------ missing data

def test_missing_dataset_error_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_DATA", str(tmp_path))
    with pytest.raises(DataMissingError) as e:
        data.load("svhn", "test")
    msg = str(e.value)
    assert "svhn" in msg and str(tmp_path / "svhn" / "test.npz") in msg
    assert "ufldl.stanford.edu" in msg and "SOFTLIB_DATA" in msg and "fetch svhn" in msg
    with pytest.raises(DataMissingError, match="cifar10h"):
        data.load_cifar10h()
    with pytest.raises(DataMissingError, match="human_accuracy"):
        data.load_imagenet_human()
    with pytest.raises(DataMissingError, match="real.json"):
        data.load_imagenet_real()


def test_load_never_downloads(tmp_path, monkeypatch):
    import urllib.request

    def boom(*a, **k):
        raise AssertionError("load must not touch the network")
    monkeypatch.setattr(urllib.request, "urlopen", boom)
    with pytest.raises(DataMissingError):
        data.load("cifar10", "train", tmp_path)


def test_cifar10_1_labels_only(root_copy):
    d = root_copy / "cifar10_1"
    for v in ("v4", "v6"):
        (d / f"{v}.npz").unlink()
    assert not data.available("cifar10_1", "v4", root_copy)
    labels = data.load_cifar10_1_labels("v4", root_copy)
    assert labels.dtype == np.int64 and len(labels) == 100
    with pytest.raises(DataMissingError, match="only the labels"):
        data.load("cifar10_1", "v4", root_copy)


def test_unknown_names_and_splits(fixture_root):
    with pytest.raises(KeyError, match="unknown dataset"):
        data.load("cifar11", "train", fixture_root)
    with pytest.raises(ValueError, match="no split"):
        data.load("cifar10", "valid", fixture_root)


# ------------------------------------------------------------------ corrupt data

def test_truncated_npz(root_copy):
    p = root_copy / "svhn" / "test.npz"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataCorruptError, match=str(p)):
        data.load("svhn", "test", root_copy)


def _rewrite(path: Path, **arrays):
    with np.load(path, allow_pickle=False) as z:
        cur = {k: z[k] for k in z.files}
    cur.update(arrays)
    with open(path, "wb") as f:
        np.savez(f, **cur)


@pytest.mark.parametrize("change, match", [
    (lambda im, lab: {"images": im.astype(np.float32)}, "uint8"),
    (lambda im, lab: {"images": im[:, :16]}, r"\[N,32,32,3\]"),
    (lambda im, lab: {"labels": lab.astype(np.int32)}, "int64"),
    (lambda im, lab: {"labels": np.where(lab == 0, 10, lab)}, "0..9"),
    (lambda im, lab: {"labels": lab[:-1]}, "labels"),
])
def test_wrong_shape_dtype_range(root_copy, change, match):
    p = root_copy / "svhn" / "test.npz"
    with np.load(p) as z:
        im, lab = z["images"], z["labels"]
    _rewrite(p, **change(im, lab))
    with pytest.raises(DataCorruptError, match=match):
        data.load("svhn", "test", root_copy)


def test_checksum_mismatch_is_reported_not_repaired(root_copy):
    p = root_copy / "cifar10" / "test.npz"
    with np.load(p) as z:
        im = z["images"].copy()
    im[0, 0, 0, 0] ^= 1
    _rewrite(p, images=im)
    data.load("cifar10", "test", root_copy)   # structure is fine ...
    with pytest.raises(DataCorruptError, match="test.npz"):
        data.verify("cifar10", root_copy)     # ... but verify recomputes the content hash
    with np.load(p) as z:
        assert z["images"][0, 0, 0, 0] == im[0, 0, 0, 0]   # nothing was repaired


def test_file_checksum_mismatch(root_copy):
    p = root_copy / "cifar10h" / "cifar10h-counts.npy"
    c = np.load(p)
    c[0, 0] += 1
    np.save(p, c)
    with pytest.raises(DataCorruptError, match="cifar10h-counts.npy"):
        data.verify("cifar10h", root_copy)


def test_mirror_variant_hash_mismatch(root_copy):
    # without PROVENANCE.json, cifar10 is checked against the registry's known copies
    pj = root_copy / "cifar10" / "PROVENANCE.json"
    pj.write_text(json.dumps({k: v for k, v in json.loads(pj.read_text()).items() if k != "arrays"}))
    with pytest.raises(DataCorruptError, match="matches no known copy"):
        data.verify("cifar10", root_copy)


@pytest.mark.parametrize("bad, match", [
    (lambda c, p: (c, np.where(np.arange(10) == 0, -p, p)), "negative"),
    (lambda c, p: (c, p * 1.01), "sum to 1"),
    (lambda c, p: (c[:9000], p[:9000]), r"\(10000, 10\)"),
])
def test_cifar10h_validation(root_copy, bad, match):
    d = root_copy / "cifar10h"
    c, p = np.load(d / "cifar10h-counts.npy"), np.load(d / "cifar10h-probs.npy")
    c2, p2 = bad(c, p)
    np.save(d / "cifar10h-counts.npy", c2)
    np.save(d / "cifar10h-probs.npy", p2)
    with pytest.raises(DataCorruptError, match="cifar10h-(counts|probs).npy"):
        data.load_cifar10h(root_copy)
    with pytest.raises(DataCorruptError, match=match):
        data.load_cifar10h(root_copy)


def test_imagenet_human_schema_errors(root_copy):
    p = root_copy / "imagenet_human" / "human_accuracy_v3.0.0.pickle"
    d = data.load_imagenet_human(root_copy)
    assert {"human_a", "human_e", "human_majority"} <= set(d["annot_data"])
    assert any(i.startswith("ILSVRC2012_val_") for i in d["labeled_images"])
    assert any(not i.startswith("ILSVRC2012_val_") for i in d["labeled_images"])
    assert ("organism", "dog") in d["split_wnids"]
    del d["annot_data"]["human_c"]
    p.write_bytes(pickle.dumps(d))
    with pytest.raises(DataCorruptError, match="human_c"):
        data.load_imagenet_human(root_copy)


def test_imagenet_real_loads(fixture_root):
    r = data.load_imagenet_real(fixture_root)
    assert len(r["real"]) == 100 and set(r["results"]) == {
        "imagenet", "imagenet-real", "imagenetv2-matched-frequency"}
    assert r["results"]["imagenet"]["param_count"].dtype.kind == "f"   # "1,0x.5" parsed


def test_real_golden_loads_and_rejects_what_is_not_the_release(fixture_root, root_copy):
    g = data.load_real_golden(fixture_root)
    assert g["experts"].shape == (5, 60) and g["raters"].shape == (12, 60)
    assert g["experts"].dtype == np.int8 and set(np.unique(g["experts"])) <= {0, 2}
    assert g["info"].shape == (60, 2) and list(g["expert_ids"]) == [100, 101, 102, 103, 104]
    folder = root_copy / "imagenet_real"
    with np.load(folder / "raters_golden.npz") as z:
        t, info, ids = z["tensor"], z["info"], z["ids"]
    t[0, 0] = [1, 0, 1]  # two answers at once
    np.savez(folder / "raters_golden.npz", tensor=t, info=info, ids=ids)
    with pytest.raises(DataCorruptError, match="one-hot"):
        data.load_real_golden(root_copy)
    t[0, 0] = [0, 0, 0]  # not asked: allowed, coded -1
    info = info.copy()
    info[0, 1] = "999" if info[0, 1] != "999" else "998"
    np.savez(folder / "raters_golden.npz", tensor=t, info=info, ids=ids)
    with pytest.raises(DataCorruptError, match="questions .'info'. differ"):
        data.load_real_golden(root_copy)
    v = data.load_real_votes(fixture_root)
    assert v["raters"].shape == (12, 60) and ((v["raters"] >= 0).sum(0) == 5).all()
    # the files are optional: without them ReaL still counts as present, verify says so
    (folder / "golden.npz").unlink()
    (folder / "raters_golden.npz").unlink()
    (folder / "raters.npz").unlink()
    assert data.available("imagenet_real", root=root_copy)
    with pytest.raises(DataMissingError, match="raters.npz"):
        data.load_real_votes(root_copy)
    with pytest.raises(DataMissingError, match="golden.npz"):
        data.load_real_golden(root_copy)
    notes = data.verify("imagenet_real", root_copy)["notes"]
    assert any(n.startswith("golden.npz: ") and "absent" in n for n in notes)


def test_fetch_checks_optional_files_and_goes_on_without_them(tmp_path, monkeypatch):
    import importlib
    F = importlib.import_module("softlib.data.fetch")  # the module, not data.fetch the function
    asked = {}

    def fake_download(url, dest, sha256=None, desc=None):
        asked[Path(dest).name] = sha256
        if Path(dest).name == "raters_golden.npz":
            raise OSError("network unreachable")
        Path(dest).write_bytes(b"x")
        return "0" * 64

    monkeypatch.setattr(F, "download", fake_download)
    data.fetch("imagenet_real", tmp_path)
    spec = data.get_spec("imagenet_real")
    # the optional file was asked for with its canonical checksum, and its failure is not fatal
    assert asked["golden.npz"] == spec.optional_sha256["golden.npz"]
    assert asked["raters_golden.npz"] == spec.optional_sha256["raters_golden.npz"]
    assert asked["real.json"] == spec.file_sha256["real.json"]
    assert not (tmp_path / "imagenet_real" / "raters_golden.npz").exists()


def test_pixel_origin_reads_the_provenance(fixture_root, tmp_path):
    """The book's discussions say what the pixels do to the numbers from this: the fixtures are
    synthetic, a mirror's PROVENANCE.md that says JPEG re-encoding is JPEG, anything else is the
    canonical release (a user's download)."""
    for name in ("cifar10", "cifar10h", "svhn"):
        assert data.pixel_origin(data.provenance(name, fixture_root)) == "synthetic"
    mirror = tmp_path / "m" / "cifar10"
    mirror.mkdir(parents=True)
    (mirror / "PROVENANCE.md").write_text("# CIFAR-10 (JPEG re-encoding), test set in order\n")
    assert data.pixel_origin(data.provenance("cifar10", tmp_path / "m")) == "jpeg"
    assert data.pixel_origin('PROVENANCE.json:\n{"synthetic": false}') == "canonical"


# ------------------------------------------------------------------ conversion

def test_convert_fake_cifar10_batches(tmp_path):
    expect, src = fixtures.write_fake_cifar10_batches(tmp_path / "raw")
    out = tmp_path / "root" / "cifar10"
    with pytest.raises(DataCorruptError, match="md5"):
        convert_cifar10_batches(src, out)               # fake bytes fail torchvision's md5s
    convert_cifar10_batches(src, out, check_md5=False)
    assert data.pixel_origin(data.provenance("cifar10", tmp_path / "root")) == "canonical"
    from softlib.data.fetch import update_provenance
    update_provenance(out, synthetic=True)   # 20 images: waive the canonical 50,000/10,000
    assert data.pixel_origin(data.provenance("cifar10", tmp_path / "root")) == "synthetic"
    tr, te = data.load("cifar10", "train", tmp_path / "root"), data.load("cifar10", "test", tmp_path / "root")
    np.testing.assert_array_equal(tr.images, expect["train_images"])
    np.testing.assert_array_equal(tr.labels, expect["train_labels"])
    np.testing.assert_array_equal(te.images, expect["test_images"])
    assert len(tr) + len(te) == 20
    assert data.verify("cifar10", tmp_path / "root")["ok"]
    with zipfile.ZipFile(out / "train.npz") as z:   # written uncompressed: fast to load
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())


def test_convert_cinic10_keeps_imagenet_only(tmp_path):
    from PIL import Image
    src = tmp_path / "CINIC-10"
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for cls in ("cat", "truck"):
            d = src / split / cls
            d.mkdir(parents=True)
            for fname in ("n02123045_1.png", "n02123045_2.png", "cifar10-train-7.png"):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / fname)
    convert_cinic10(src, tmp_path / "root" / "cinic10")
    s = data.load("cinic10", "valid", tmp_path / "root")
    assert len(s) == 4 and sorted(set(s.labels.tolist())) == [3, 9]


def test_download_checks_sha256(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello softlib")
    import hashlib
    good = hashlib.sha256(b"hello softlib").hexdigest()
    assert download(src.as_uri(), tmp_path / "a.bin", good) == good
    with pytest.raises(DataCorruptError, match="sha256"):
        download(src.as_uri(), tmp_path / "b.bin", "0" * 64)
    assert not (tmp_path / "b.bin").exists()


def test_repack_keeps_content(tmp_path):
    folder = tmp_path / "cinic10"
    im = np.zeros((3, 32, 32, 3), np.uint8)
    write_split(folder, "test", im, np.arange(3), compressed=True)
    assert repack("cinic10", tmp_path) == [folder / "test.npz"]
    assert data.verify("cinic10", tmp_path)["ok"]


def test_cli_info_and_verify(fixture_root, capsys):
    from softlib.data.__main__ import main
    assert main(["--root", str(fixture_root), "info"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert main(["--root", str(fixture_root), "verify", "cifar10h"]) == 0


def test_cli_verify_refuses_a_missing_or_empty_root(tmp_path, capsys):
    from softlib.data.__main__ import main
    nope = tmp_path / "nonexistent"
    for argv in (["verify"], ["verify", "cifar10h"]):
        assert main(["--root", str(nope)] + argv) == 1
        out, err = capsys.readouterr()
        assert f"data root {nope} does not exist" in err and len(err.strip().splitlines()) == 1
        assert out == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--root", str(empty), "verify"]) == 1
    out, err = capsys.readouterr()
    assert f"no datasets under {empty} to verify" in err
    assert "python -m softlib.data fetch NAME" in err and out == ""


def test_cli_info_says_the_root_is_missing(tmp_path, capsys):
    from softlib.data.__main__ import main
    nope = tmp_path / "nonexistent"
    assert main(["--root", str(nope), "info"]) == 0
    out = capsys.readouterr().out
    assert f"data root {nope} does not exist" in out
    assert "cifar10h" in out and "absent" in out   # the listing stays


def test_cli_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """``python -m softlib.data info | head -1``: the reader closing the pipe early is no error
    worth a traceback; the command ends as ``ls | head`` does (status 141, nothing on stderr)."""
    import subprocess
    import sys
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write meets EPIPE
    try:
        r = subprocess.run([sys.executable, "-m", "softlib.data", "--root", str(tmp_path), "info"],
                           stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
                           cwd=Path(__file__).resolve().parents[1])
    finally:
        os.close(write_end)
    assert r.stderr == "" and r.returncode == 141


def test_cifar10h_bad_row_sum_prints_a_plain_number(root_copy):
    path = root_copy / "cifar10h" / "cifar10h-probs.npy"
    probs = np.load(path)
    probs[0] = 0.0
    probs[0, :3] = 0.5
    np.save(path, probs)
    with pytest.raises(DataCorruptError, match=r"row 0 sums to 1\.5\)") as e:
        data.load_cifar10h(root_copy)
    assert "np." not in str(e.value)


def test_laing_split_size_error_prints_plain_numbers():
    from softlib.data.splits import laing_split
    with pytest.raises(ValueError, match=r"sizes \(5, 3, 3\) add up to 11, but there are 10") as e:
        laing_split(10, sizes=(np.int64(5), np.int64(3), np.int64(3)))
    assert "np." not in str(e.value)


def test_missing_hint_names_no_dev_files_nor_the_wrong_root_source(tmp_path, monkeypatch):
    monkeypatch.setenv("SOFTLIB_DATA", str(tmp_path))
    with pytest.raises(DataMissingError) as e:
        data.load_cifar10h()
    msg = str(e.value)
    assert "materialize" not in msg and "shared/" not in msg
    assert f"data root {tmp_path} (SOFTLIB_DATA or --data-root)" in msg
    assert "from SOFTLIB_DATA=" not in msg
    assert msg.index("python -m softlib.data fetch cifar10h") \
        < msg.index("offline mirror prepared by the project's developers")


# ------------------------------------------------------------------ restricted unpickler

def test_restricted_unpickler_allows_plain_containers():
    obj = {"a": [1, 2.5, None, True], ("t", 1): {"x", "y"}, "f": frozenset({1}), "b": b"\x00"}
    for proto in (0, 2, 4):
        if proto < 3:
            obj2 = {k: v for k, v in obj.items() if k != "b"}
        else:
            obj2 = obj
        assert restricted_loads(pickle.dumps(obj2, protocol=proto)) == obj2


class _Custom:
    pass


def test_restricted_unpickler_refuses_globals():
    with pytest.raises(UnsafePickleError, match="os.system|posix.system"):
        restricted_loads(pickle.dumps(os.system))
    with pytest.raises(UnsafePickleError, match="_Custom"):
        restricted_loads(pickle.dumps(_Custom()))
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    with pytest.raises(UnsafePickleError):
        restricted_loads(evil)
    with pytest.raises(UnsafePickleError, match="numpy"):   # arrays only when allowed explicitly
        restricted_loads(pickle.dumps(np.arange(3)))
    with pytest.raises(DataCorruptError):
        restricted_loads(b"not a pickle")


# ------------------------------------------------------------------ the real mirror

@pytest.mark.mirror
def test_mirror_verifies():
    if not os.environ.get("SOFTLIB_DATA"):
        pytest.skip("SOFTLIB_DATA is not set")
    rows = [r for r in data.info() if r["present"] or r["bytes"] > 0]
    assert rows, "SOFTLIB_DATA holds no dataset"
    for r in rows:
        assert data.verify(r["name"])["ok"]


def test_cifar10h_raw_table_is_optional_and_validated(root_copy):
    with pytest.raises(DataMissingError, match="optional"):
        data.load_cifar10h_raw(root_copy)
    path = root_copy / "cifar10h" / "cifar10h-raw.zip"
    rows = ["annotator_id,cifar10_test_test_idx,correct_guess,is_attn_check",
            "0,5,1,0", "0,-99999,1,1", "1,7,0,0"]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cifar10h-raw.csv", "\n".join(rows) + "\n")
    table = data.load_cifar10h_raw(root_copy)
    assert list(table["cifar10_test_test_idx"]) == [5, 7]  # attention checks dropped
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("cifar10h-raw.csv", "annotator_id,chosen_label\n0,3\n")
    with pytest.raises(DataCorruptError, match="columns"):
        data.load_cifar10h_raw(root_copy)
    path.write_bytes(b"not a zip")
    with pytest.raises(DataCorruptError, match="not a readable zip"):
        data.load_cifar10h_raw(root_copy)
