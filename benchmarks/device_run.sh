#!/usr/bin/env bash
# Prepared runs on a lent GPU machine (torch, no jupyter-book/papermill), from the repository
# root, with the offline data mirror copied into .device_data/ (git-ignored, carried). A lent
# machine allows 600 s per command and about 15 minutes in all, start-up included, so the work
# comes in calls that each fit one command:
#
#   bash benchmarks/device_run.sh slice BUDGET_SECONDS SECTIONS   # ~BUDGET + 60 s
#       one resumable slice of the `gpu` profile's SECTIONS (comma-separated, computed in
#       that order, section 3 before 4): the committed
#       bundles results/gpu/*.tar.gz are imported first, so it continues where they stop; then
#       `compute --budget-seconds` (no job starts after the budget; a training still running
#       at BUDGET + 120 s, or 30 s before the command's 570 s less the export if that comes
#       first, stops at an epoch end with a checkpoint, `--halt-seconds`, which the next call
#       on this warm machine resumes; `timeout` 30 s later is the backstop) and a bundle
#       of what the slice added to those sections (`export --builds-on results/gpu`),
#       $OUT/<SECTIONS>-<UTC time>.tar.gz (over 4 MiB: a chain of parts, <name>-part1of3.tar.gz
#       ..., each building on the ones before), to commit beside the others under results/gpu/,
#       and $OUT/groups.json, how fast its stacked groups trained (benchmarks/group_rates.py),
#       to commit as benchmarks/<gpu>-<date>-groups.json (what `plan` costs groups at)
#   bash benchmarks/device_run.sh measure                          # ~570 s
#       GPU-only correctness checks of the multi-model path (cuda_checks.py), the engine with
#       CUDA graphs over successive groups of new models (graph_reuse.py), then the benchmark
#       (python -m softlib.bench) as far as the command's time allows; JSON files to record
#       under benchmarks/ (stacked_profile.py, where the fold grid's time goes, runs alone)
#   bash benchmarks/device_run.sh session BUDGET_SECONDS SECTIONS  # ~570 s: one lent session
#       the GPU checks of the eager path the slices run (cuda_checks.py --checks eager: no
#       CUDA-graph checks, whose compiling took most of the ~4 min of all of them on an H100;
#       no slice unless they pass; skipped where a record under benchmarks/ shows them passing
#       on a GPU with the same engine fingerprint and torch: commit each session's
#       cuda_checks.json there; SKIP_CHECKS=1 skips them anyway, SKIP_CHECKS=0 runs them
#       anyway), a slice (as above,
#       but a training started before the budget may run until the command's end less the
#       export, where it halts with a checkpoint: only a session's last call loses its
#       unfinished group), then as many of the measurements as fit the rest of one 600 s
#       command:
#       the engine eager and with CUDA graphs over successive groups of new models
#       (graph_reuse.py) for the fold grid and Laing's groups (21 runs); the benchmark and
#       stacked_profile.py are left out (recorded already)
#
# Bundles carry no weights, so work that needs a model's weights must run on the machine that
# trained it: Laing's evaluations always follow their training (even past the budget), but
# section 3's fine-tuning needs its pretrained weights and section 4 attacks section 3's models.
# Sections 3-4 therefore go one architecture at a time (see benchmarks/README.md):
#   ARCHS=LABEL,...               compute --archs: fine-tune and attack only these (every
#                                 architecture is still pretrained: the distillation teacher)
#   PRETRAINED_WEIGHTS=LABEL,...  also export those architectures' pretrained weights,
#                                 $OUT/weights-<UTC time>.tar.gz: NOT for results/ (weights), but
#                                 for .device_carry/ (git-ignored), which a later call imports
#                                 after the committed bundles, so another machine fine-tunes them
# The cache and the data live in .cache/device/ (git-ignored: kept between calls on a warm
# machine). Everything lands in $OUT (log.txt appends).
set -uo pipefail
export PYTHONUNBUFFERED=1 SOFTLIB_DATA="$PWD/.cache/device/data" SOFTLIB_CACHE="$PWD/.cache/device/results"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # benchmarks/*.py import softlib from here
mode="${1:-}"
profile="${SOFTLIB_PROFILE:-gpu}"  # another profile only to try the script out (smoke, on a CPU)
device="${DEVICE:-cuda}"  # DEVICE=cpu CHECK_N=256: the checks and profiles too, to try it out
out="${OUT:-/tmp/out}"
mkdir -p "$out"
case "$mode" in
  slice|measure|session) ;;
  *) echo "usage: bash benchmarks/device_run.sh slice|session BUDGET_SECONDS SECTIONS | measure" >&2
     exit 2 ;;
esac
start=$SECONDS
command_seconds="${DEVICE_COMMAND_SECONDS:-570}"  # a lent machine's 600 s per command, less a margin
capped() {  # capped MAX_SECONDS CMD...: run CMD for at most MAX_SECONDS or what the command has left
  local left=$((command_seconds - (SECONDS - start) - 10)) cap="$1"; shift
  [ "$left" -lt "$cap" ] && cap=$left
  # skipped, it fails as a time-out would: the GPU checks gate the slice on their status
  if [ "$cap" -lt 20 ]; then echo "skipped (no time left in this command): $*" | tee -a "$out/log.txt"; return 124; fi
  timeout "$cap" "$@" 2>&1 | tee -a "$out/log.txt"
}
gpu_checks() {  # gpu_checks SET: the GPU-only correctness checks (cuda_checks.py --checks SET),
  # cut at 330 s (all: ~260 s on an H100, most of it compiling the CUDA graphs; eager: without them)
  capped 330 python3 benchmarks/cuda_checks.py --device "$device" ${CHECK_N:+--n "$CHECK_N"} \
    --checks "$1" --json "$out/cuda_checks.json"
}
fold_grid_graphs() {  # the engine eager and with CUDA graphs, call after call with new models
  capped 200 python3 benchmarks/graph_reuse.py --device "$device" \
    ${CHECK_N:+--n "$CHECK_N"} --json "$out/graph_reuse.json"
}
if [ ! -f "$SOFTLIB_DATA/.materialized" ]; then
  python3 .device_data/materialize.py --out "$SOFTLIB_DATA" >/dev/null \
    && python3 -m softlib.data --root "$SOFTLIB_DATA" repack cifar10 >/dev/null \
    && touch "$SOFTLIB_DATA/.materialized" || exit 1
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$out/log.txt"
do_slice=0
[ "$mode" = slice ] && do_slice=1
skip_checks="${SKIP_CHECKS:-auto}"  # auto: skip where a committed record shows them passing
if [ "$mode" = session ] && [ "$skip_checks" = auto ]; then
  # with this engine (a hash of softlib's training code and the checks) and this torch
  if python3 benchmarks/cuda_checks.py --passed-before benchmarks --checks eager 2>&1 \
      | tee -a "$out/log.txt"; then
    skip_checks=1
  fi
fi
if [ "$mode" = session ] && [ "$skip_checks" = 1 ]; then
  echo "GPU checks skipped (SKIP_CHECKS=${SKIP_CHECKS:-auto})" | tee -a "$out/log.txt"
  do_slice=1
elif [ "$mode" = session ]; then  # no slice from an engine that fails its GPU checks: those of
  # the eager path the slices run (the gpu profile compiles nothing); `measure` runs them all
  if gpu_checks eager; then
    do_slice=1
  else
    echo "the GPU checks failed or ran out of time (see above): no slice computed" | tee -a "$out/log.txt"
  fi
fi
if [ "$do_slice" = 1 ]; then
  budget="${2:?slice needs BUDGET_SECONDS}"
  sections="${3:?slice needs SECTIONS, e.g. generalisation or calibration_ood}"
  case ",$sections," in
    *,alternatives,*|*,adversarial,*)
      echo "note: alternatives and adversarial need weights that bundles do not carry: a slice" \
           "that stops inside them cannot be continued elsewhere, unless it ran ARCHS=... and" \
           "exported PRETRAINED_WEIGHTS=... for the rest (ARCHS=${ARCHS:-all})" | tee -a "$out/log.txt" ;;
  esac
  # every committed bundle, each after the bundles it builds on
  [ -d "results/$profile" ] && python3 -m softlib.book import "results/$profile" 2>&1 | tee -a "$out/log.txt"
  # pretrained weights an earlier machine exported for this one (PRETRAINED_WEIGHTS, above)
  if compgen -G ".device_carry/*.tar.gz" >/dev/null; then
    python3 -m softlib.book import .device_carry/*.tar.gz 2>&1 | tee -a "$out/log.txt"
  fi
  hard=$((budget + 150))  # a job started just before the budget ends may run on; then a hard stop
  left=$((command_seconds - (SECONDS - start) - 40))  # ... that leaves time for the export
  # in a session the slice comes before the profiles: a group started just before the budget
  # (ResNet-110's 10 folds: ~3 min) may use the command's time rather than stop early
  if [ "$mode" = session ] || [ "$left" -lt "$hard" ]; then hard=$left; fi
  # 30 s before the hard stop, trainings still running stop at an epoch end and keep a
  # checkpoint (.cache/device/results/.checkpoints) that the next call on this warm machine
  # resumes, rather than being killed and lost
  halt=$((hard - 30))
  [ "$halt" -lt "$budget" ] && budget=$halt
  if [ "$hard" -lt 60 ]; then
    echo "no time left in this command for a slice (${hard}s)" | tee -a "$out/log.txt"
  else
    # the log keeps the jobs' progress, not every epoch's bar
    timeout "$hard" python3 -m softlib.book compute --profile "$profile" --sections "$sections" \
      --budget-seconds "$budget" --halt-seconds "$halt" ${ARCHS:+--archs "$ARCHS"} 2>&1 | tr '\r' '\n' | sed -e 's/\x1b\[A//g' \
      | grep --line-buffered -v -E 'it/s\]|s/it\]|^[[:space:]]*$' | tee -a "$out/log.txt"
    # only what this slice added: the bundle builds on the committed ones, named by its UTC time
    bundle="$out/${sections//,/-}-$(date -u +%Y%m%dT%H%M).tar.gz"
    # in parts of at most 4 MiB (BUNDLE_MAX_MIB), each building on the ones before (a few MB a
    # committed file)
    python3 -m softlib.book export --profile "$profile" --sections "$sections" \
      --builds-on "results/$profile" --max-mib "${BUNDLE_MAX_MIB:-4}" "$bundle" 2>&1 \
      | tee -a "$out/log.txt"
    # how fast its stacked groups trained (what `plan` costs groups at): a record to commit as
    # benchmarks/<gpu>-<date>-groups.json (nothing written when the slice stacked nothing)
    if compgen -G "${bundle%.tar.gz}*.tar.gz" >/dev/null; then
      python3 benchmarks/group_rates.py --json "$out/groups.json" \
        --note "the $profile profile's slice of $(date -u +%F) ($sections)" \
        "${bundle%.tar.gz}"*.tar.gz 2>&1 | tee -a "$out/log.txt"
    fi
    if [ -n "${PRETRAINED_WEIGHTS:-}" ]; then  # the weights only: it builds on the bundle above
      python3 -m softlib.book export --profile "$profile" --sections alternatives \
        --builds-on "results/$profile" --builds-on "$out" \
        --pretrained-weights "$PRETRAINED_WEIGHTS" "$out/weights-$(date -u +%Y%m%dT%H%M).tar.gz" \
        2>&1 | tee -a "$out/log.txt"
    fi
    # a lent machine returns files of at most 16 MiB: a larger bundle comes back in parts,
    # joined here with `cat NAME.part-* > NAME` (the bundle's checksums verify the join on import)
    for b in "$bundle" "$out"/weights-*.tar.gz; do
      if [ -f "$b" ] && [ "$(stat -c %s "$b")" -gt $((15 * 1024 * 1024)) ]; then
        split -b 15M -d "$b" "$b.part-" && rm "$b" \
          && echo "bundle split into $(ls "$b".part-* | wc -l) parts: cat $(basename "$b").part-* > $(basename "$b")" \
          | tee -a "$out/log.txt"
      fi
    done
  fi
fi
if [ "$mode" = session ]; then
  # the engine with CUDA graphs, call after call with new models as the studies call it
  # (stacked_profile.py --compile did not finish within 240 s on the H100), first Laing's
  # groups as gpu trains them (7 conditions x 3 seeds, batch 64: not measured yet), then the
  # fold grid (recorded on the H200: benchmarks/nvidia-h200-2026-11-26-graph-reuse-folds.json)
  capped 200 python3 benchmarks/graph_reuse.py --device "$device" --k 21 --batch 64 \
    --n "${CHECK_N:-8000}" --json "$out/graph_reuse_laing.json"
  fold_grid_graphs
elif [ "$mode" = measure ]; then  # each part cut to what the 600 s command has left
  gpu_checks all
  fold_grid_graphs
  capped 240 python3 -m softlib.bench --device "$device" --json "$out/bench.json"
fi
ls -la "$out"
