#!/usr/bin/env bash
# Idempotent set-up of .venv with streamcap and its dependencies.
#   scripts/install.sh          the product
#   scripts/install.sh --test   plus the test tools and the real servers the tests start
#                               (mosquitto, GStreamer's RTSP server; needs root for apt-get)
set -euo pipefail
cd "$(dirname "$0")/.."

with_test=0
[ "${1:-}" = "--test" ] && with_test=1

if [ "$with_test" = 1 ]; then
  apt_packages=(mosquitto mosquitto-clients gir1.2-gst-rtsp-server-1.0 python3-gi
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-rtsp gstreamer1.0-tools gstreamer1.0-libav ffmpeg
    chromium chromium-driver systemd postgresql jq)
  missing=()
  for p in "${apt_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "install.sh: missing Debian packages ${missing[*]} (tests needing them will skip); run as root to install" >&2
    fi
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ] && ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
  # Debian and Ubuntu ship venv's pip bootstrap in a separate package.
  version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "install.sh: $python cannot make a venv; installing python3-venv" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$python" -c "import ensurepip" >/dev/null 2>&1 ||
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >/dev/null
  else
    echo "install.sh: $python cannot make a venv (no ensurepip): run 'sudo apt-get install python3-venv'" \
      "(or python$version-venv), or run this script as root" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)

# torch first, the build chosen for this box (CUDA with an NVIDIA GPU, else PyTorch's CPU build where
# its index can be reached), so that the project's unpinned "torch" requirement does not pull another.
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  bash scripts/install_torch.sh .venv/bin/python
fi
if [ "$with_test" = 1 ]; then
  "${pip[@]}" -e ".[test]"
  # A real Home Assistant (its own venv under .cache/) for the discovery tests.
  bash tests/integration/ha_setup.sh
else
  "${pip[@]}" -e ".[onnx]"
fi
