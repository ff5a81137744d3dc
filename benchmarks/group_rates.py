"""Record how fast the studies' stacked groups trained, from the results bundles a slice exported.

Every model a study trains in a stacked group keeps the group's aggregate images per second in
its cache entry; this reads those entries out of bundles (without importing them) and writes
them as ``train_stacked`` rows of a ``benchmarks/<gpu>-<date>-groups.json`` record, which
``python -m softlib.book plan`` costs stacked groups at (``softlib.book.plan.recorded_throughput``).

    python benchmarks/group_rates.py [--gpu NAME] --json OUT BUNDLE_OR_DIR ...

``--gpu``: the GPU that trained them (default: the device of the latest run the bundles'
manifests record, i.e. the slice that exported them). ``benchmarks/device_run.sh`` runs it on
each slice's bundles.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from softlib._io import save_json
from softlib.book import bundle as B
from softlib.book.plan import stacked_group_rates


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", help="results bundles (.tar.gz) or folders of them")
    ap.add_argument("--json", required=True, help="the record to write")
    ap.add_argument("--gpu", help="the GPU that trained them (default: from the manifests)")
    ap.add_argument("--note", help="a note to keep with the record (where the bundles came from)")
    args = ap.parse_args(argv)
    paths = B.bundle_paths(args.bundles)
    if not paths:
        print(f"error: no bundles in {' '.join(args.bundles)}", file=sys.stderr)
        return 1
    metas, devices, names = [], set(), []
    for path in paths:
        try:
            manifest, entries = B.read_bundle_metas(path)
        except B.BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        metas += list(entries.values())
        devices.add(B.producing_device(manifest))
        names.append(path.name)
    gpu = args.gpu
    if gpu is None:
        found = sorted(d for d in devices if d)
        if len(found) != 1:
            print(f"error: the bundles' latest runs name {found or 'no device'}: say which GPU "
                  "trained them with --gpu", file=sys.stderr)
            return 1
        gpu = found[0]
    rows = stacked_group_rates(metas)
    if not rows:
        print("no stacked groups in these bundles: nothing recorded")
        return 0
    record = {"source": f"benchmarks/group_rates.py over {', '.join(names)}",
              "machine": {"gpu": gpu}, "rows": rows}
    if args.note:
        record["note"] = args.note
    save_json(Path(args.json), record)
    for r in rows:
        print(f"{r['arch']:<22} {r['models']:>3} at once: {r['value']:>9,.0f} img/s "
              f"(median of {r['groups']} group{'s' if r['groups'] != 1 else ''})")
    print(f"wrote {args.json} ({gpu})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
