#!/usr/bin/env bash
# Prepare a call to a lent GPU machine, here (not there): copy the parts of the offline data
# mirror that the call's sections read into the git-ignored .device_data/ (CIFAR-10, CIFAR-10H
# and the CIFAR-10.1 labels for every section, Fashion-MNIST for calibration_ood; never the
# ImageNet rater data nor the published models' CIFAR-10.1 predictions, which only notebooks
# read), then say how much would travel with the call: the tracked files (the committed results
# bundles among them), untracked files git does not ignore, and the carried folders. A lent
# machine takes at most 64 MiB in all (/work/.library/device/README.md), so this stops with
# an error above it.
#
#   bash benchmarks/device_data.sh SECTIONS [CARRIED ...]
#       SECTIONS: comma-separated, as device_run.sh takes them (or 'all'); CARRIED: further
#       carried folders (e.g. .device_carry); .device_data is always counted. MIRROR=DIR: the
#       mirror (default ../shared/data)
set -euo pipefail
sections="${1:?usage: bash benchmarks/device_data.sh SECTIONS [CARRIED ...]}"
shift
mirror="${MIRROR:-../shared/data}"
limit=$((64 * 1024 * 1024))
datasets="cifar10 cifar10h cifar10_1"
for s in ${sections//,/ }; do
  case "$s" in
    generalisation|alternatives|adversarial) ;;
    calibration_ood|all) datasets="$datasets fashion_mnist" ;;
    *) echo "error: unknown section '$s' (generalisation, alternatives, adversarial, calibration_ood or all)" >&2
       exit 1 ;;
  esac
done
[ -f "$mirror/materialize.py" ] || { echo "error: no offline data mirror at $mirror" >&2; exit 1; }
rm -rf .device_data
mkdir -p .device_data
cp "$mirror/materialize.py" .device_data/
for name in $datasets; do
  [ -d "$mirror/$name" ] || { echo "error: $mirror/$name is missing" >&2; exit 1; }
  cp -r "$mirror/$name" .device_data/
done
rm -rf .device_data/cifar10_1/model_predictions
git check-ignore -q .device_data || { echo "error: .device_data is not git-ignored" >&2; exit 1; }
size() { du -sb "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
sum_files() { { xargs -0 -r stat -c %s 2>/dev/null || true; } | awk '{s += $1} END {print s + 0}'; }
tracked=$(git ls-files -z | sum_files)  # a tracked file deleted here is not counted
untracked=$(git ls-files -z --others --exclude-standard | sum_files)
results=$(git ls-files -z results | sum_files)
data=$(size .device_data)
carried=0
for c in "$@"; do
  [ -e "$c" ] || { echo "error: no carried folder $c" >&2; exit 1; }
  carried=$((carried + $(size "$c")))
done
total=$((tracked + untracked + data + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "datasets in .device_data: $datasets"
echo "travels with a call: tracked $(mib "$tracked") (results bundles $(mib "$results")), untracked $(mib "$untracked"), .device_data $(mib "$data"), carried $(mib "$carried"): $(mib "$total") of $(mib "$limit")"
if [ "$total" -gt "$limit" ]; then
  echo "error: over a lent machine's limit; carry less (.device_data holds only what the sections read)" >&2
  exit 1
fi
