#!/usr/bin/env bash
# Install torch and torchvision into a venv, the build chosen for this box (scripts/install.sh and
# deploy/install.sh both call it, before the project's unpinned torch requirement could pull one).
#
#   scripts/install_torch.sh VENV_PYTHON [--dry-run]
#
#   aarch64                   torch 2.9.1 / torchvision 0.24.1 from PyPI (CPU; a Jetson uses JetPack's
#                             torch instead, see deploy/install.sh)
#   x86_64 with an NVIDIA GPU torch 2.14.1 / torchvision 0.29.1 from PyPI: the CUDA build, with its
#   (nvidia-smi works)        nvidia-* libraries (the venv is about 6 GB)
#   x86_64 without a GPU      the same versions from PyTorch's CPU index (download.pytorch.org/whl/cpu:
#                             no CUDA libraries, several GB smaller); if that index cannot be reached
#                             (offline, a proxy, a mirror of PyPI only), PyPI's CUDA build, which runs
#                             on the CPU too, and a line saying so
#
# STREAMCAP_TORCH=cpu or cuda skips the detection. --dry-run prints the choice and installs nothing.
set -euo pipefail

py=${1:?usage: install_torch.sh VENV_PYTHON [--dry-run]}
dry=0
[ "${2:-}" = --dry-run ] && dry=1
cpu_index=https://download.pytorch.org/whl/cpu
say() { echo "install_torch.sh: $*"; }

case "$(uname -m)" in
  aarch64) versions=(torch==2.9.1 torchvision==0.24.1) ;;
  *) versions=(torch==2.14.1 torchvision==0.29.1) ;;
esac
choice=${STREAMCAP_TORCH:-}
forced=0
[ -n "$choice" ] && forced=1
if [ -z "$choice" ]; then
  if [ "$(uname -m)" = aarch64 ]; then
    choice=pypi
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    choice=cuda
  else
    choice=cpu
  fi
fi
case "$choice" in cpu | cuda | pypi) ;; *) say "STREAMCAP_TORCH must be cpu or cuda, not $choice" >&2; exit 2 ;; esac

pip=("$py" -m pip install -q --disable-pip-version-check)
if [ "$choice" = cpu ]; then
  # Ask the index first (a few seconds at most), so an offline box does not wait on pip's retries.
  if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=5)" "$cpu_index" \
    >/dev/null 2>&1; then
    say "no NVIDIA GPU: the CPU build of ${versions[*]} from $cpu_index"
    if [ "$dry" = 1 ] || "${pip[@]}" --index-url "$cpu_index" "${versions[@]}"; then
      exit 0
    fi
    say "the CPU index did not have ${versions[*]}; falling back to PyPI"
  elif [ "$forced" = 1 ]; then
    say "STREAMCAP_TORCH=cpu, but $cpu_index cannot be reached from here" >&2
    exit 1
  else
    say "no NVIDIA GPU, but $cpu_index cannot be reached: PyPI's CUDA build of ${versions[*]} (about 6 GB," \
      "runs on the CPU); where that index is reachable, STREAMCAP_TORCH=cpu gets the small CPU build"
  fi
elif [ "$choice" = cuda ]; then
  say "NVIDIA GPU: PyPI's CUDA build of ${versions[*]}"
else
  say "${versions[*]} from PyPI"
fi
[ "$dry" = 1 ] || "${pip[@]}" "${versions[@]}"
