"""Command line: ``python -m softlib.data {fetch,verify,info,build-imagenet-far,corrupt,repack}``."""
from __future__ import annotations

import argparse
import sys

from .errors import DataError


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    from . import registry
    ap = argparse.ArgumentParser(prog="python -m softlib.data", description=__doc__)
    ap.add_argument("--root", help="data root (default: $SOFTLIB_DATA)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("fetch", help="download datasets from their canonical sources")
    p.add_argument("names", nargs="+", choices=[n for n, s in registry.SPECS.items() if s.fetchable])
    p = sub.add_parser("verify", help="recompute checksums and re-check structure")
    p.add_argument("names", nargs="*", help="datasets (default: every one present)")
    sub.add_parser("info", help="what is present, where it came from, sizes")
    p = sub.add_parser("build-imagenet-far", help="build ImageNet-Far from a local ImageNet folder")
    p.add_argument("--imagenet", required=True, help="folder with <wnid>/*.JPEG class folders")
    p.add_argument("--max-per-class", type=int, default=None)
    p.add_argument("--allow-missing", action="store_true")
    p = sub.add_parser("corrupt", help="generate CIFAR-10-C-style corruptions of training images")
    p.add_argument("--per-class", type=int, default=100,
                   help="first N training images per class (0: all 50,000)")
    p.add_argument("--corruptions", nargs="*", default=list(registry.CORRUPTIONS))
    p.add_argument("--severities", nargs="*", type=int, default=list(registry.SEVERITIES))
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("repack", help="rewrite compressed split npz files uncompressed (faster loads)")
    p.add_argument("names", nargs="+")
    a = ap.parse_args(argv)
    try:
        return _run(a)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(a) -> int:
    from . import store
    if a.cmd == "fetch":
        from .fetch import fetch
        for n in a.names:
            print(f"{n}: {fetch(n, a.root)}")
    elif a.cmd == "verify":
        from ..paths import data_root
        root = data_root(a.root)
        if not root.exists():
            raise DataError(f"data root {root} does not exist")
        if not root.is_dir():
            raise DataError(f"data root {root} is not a folder")
        names = a.names or [r["name"] for r in store.info(a.root)
                            if r["present"] or r["bytes"] > 0]
        if not names:
            raise DataError(f"no datasets under {root} to verify; fetch some with "
                            f"`python -m softlib.data fetch NAME`")
        bad = 0
        for n in names:
            try:
                r = store.verify(n, a.root)
                print(f"{n}: OK{' (SYNTHETIC)' if r['synthetic'] else ''}")
                for c in r["checked"]:
                    print(f"  ok    {c}")
                for c in r["notes"]:
                    print(f"  note  {c}")
            except DataError as e:
                bad += 1
                print(f"{n}: FAILED\n  {e}")
        return 1 if bad else 0
    elif a.cmd == "info":
        from ..paths import data_root
        root = data_root(a.root)
        print(f"data root: {root}")
        if not root.is_dir():
            print(f"data root {root} {'is not a folder' if root.exists() else 'does not exist'}; "
                  f"every dataset below is absent")
        for r in store.info(a.root):
            state = "present" if r["present"] else "absent"
            extra = f" labels only: {r['labels_only']}" if r.get("labels_only") else ""
            print(f"{r['name']:15s} {state:8s} {_fmt_bytes(r['bytes']):>9s}  "
                  f"splits={','.join(r['splits']) or '-'}{extra}\n{'':15s} source: {r['source']}")
    elif a.cmd == "build-imagenet-far":
        from .imagenet_far import build_imagenet_far
        print(build_imagenet_far(a.imagenet, a.root, max_per_class=a.max_per_class,
                                 allow_missing=a.allow_missing))
    elif a.cmd == "corrupt":
        from .corruptions import generate
        for p in generate(corruptions=a.corruptions, severities=a.severities, root=a.root,
                          seed=a.seed, per_class=a.per_class or None):
            print(p)
    elif a.cmd == "repack":
        from .fetch import repack
        for n in a.names:
            for p in repack(n, a.root):
                print(p)
    return 0


if __name__ == "__main__":
    from .._io import exit_with
    exit_with(main)
