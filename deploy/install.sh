#!/usr/bin/env bash
# Install streamcap as a systemd service on a Debian, Ubuntu or JetPack box, from the checkout
# this script lives in. Run as root; it prints each thing it does.
#
#   deploy/install.sh [--prefix DIR] [--root DIR] [--no-systemctl] [--skip-venv]
#
#   --prefix DIR     where the venv goes (default /opt/streamcap): DIR/venv/bin/streamcap
#   --root DIR       install under DIR as if it were / (a trial or a package build; no root needed);
#                    the unit is enabled with `systemctl --root` and no user is created
#   --no-systemctl   create no user and call no systemctl
#   --skip-venv      do not create the venv (several GB) or install the Python packages
#
# It never overwrites an existing config, rules folder or secrets file. Installed:
#   PREFIX/venv                          the project and its dependencies (x86_64: torch 2.14.1, the CUDA build
#                                        with an NVIDIA GPU, else PyTorch's CPU build where download.pytorch.org
#                                        answers (scripts/install_torch.sh); Jetson: JetPack's torch and
#                                        TensorRT, through --system-site-packages)
#   /etc/streamcap/streamcap.yaml        from deploy/streamcap.example.yaml
#   /etc/streamcap/rules/                from rules/
#   /etc/streamcap/streamcap.env         secrets for the unit (CAMERA_PASSWORD=..., MQTT_PASSWORD=...)
#   /etc/systemd/system/streamcap.service, enabled (not started)
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/streamcap
root=
systemctl=1
venv=1

die() {
  echo "install.sh: $*" >&2
  exit 2
}
say() { echo "install.sh: $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a folder"; root=$2; shift 2 ;;
    --no-systemctl) systemctl=0; shift ;;
    --skip-venv) venv=0; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
case "$prefix" in /*) ;; *) die "--prefix must be an absolute path, not $prefix" ;; esac
prefix=${prefix%/}
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
  [ "$root" != / ] || root=
fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
  die "run as root (or try it out with --root DIR --no-systemctl)"
fi

# 1. The user the unit runs as (User=streamcap), in the video group for USB cameras.
if [ "$systemctl" = 0 ]; then
  say "skipped: user streamcap (--no-systemctl)"
elif [ -n "$root" ]; then
  say "skipped: user streamcap (--root: create it on the target box)"
elif id streamcap >/dev/null 2>&1; then
  say "user streamcap exists"
else
  groups=()
  getent group video >/dev/null && groups=(--groups video)
  useradd --system --user-group "${groups[@]}" --home-dir /var/lib/streamcap --no-create-home \
    --shell /usr/sbin/nologin streamcap
  say "created system user streamcap"
fi

# 2. The venv, with torch chosen per box before the project's unpinned torch requirement is met.
venv_dir=$root$prefix/venv
python=${PYTHON:-python3}
pip=("$venv_dir/bin/python" -m pip install -q --disable-pip-version-check)
if [ "$venv" = 0 ]; then
  say "skipped: venv $venv_dir (--skip-venv)"
elif [ -e /etc/nv_tegra_release ]; then
  # Jetson: TensorRT comes with JetPack and torch is NVIDIA's build for it (PyPI's aarch64 torch has no
  # CUDA); the venv sees both through the system site-packages. Those torch builds use NumPy 1.x.
  "$python" -c "import torch, torchvision, tensorrt" 2>/dev/null ||
    die "Jetson: $python cannot import torch, torchvision and tensorrt; install JetPack's python3-libnvinfer and NVIDIA's torch for your JetPack first"
  [ -x "$venv_dir/bin/python" ] || "$python" -m venv --system-site-packages "$venv_dir"
  "${pip[@]}" "${src}[onnx]" "numpy<2"
  "$venv_dir/bin/python" -c "import sys, torch; sys.exit(torch.__file__.startswith(sys.prefix))" ||
    die "Jetson: pip put a PyPI torch into $venv_dir over NVIDIA's; remove the venv and check the system torch"
else
  [ -x "$venv_dir/bin/python" ] || "$python" -m venv "$venv_dir"
  if ! "$venv_dir/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    bash "$src/scripts/install_torch.sh" "$venv_dir/bin/python"
  fi
  "${pip[@]}" "${src}[onnx]"
fi
if [ "$venv" = 1 ]; then
  "$venv_dir/bin/streamcap" config schema >/dev/null ||
    die "$venv_dir/bin/streamcap does not start (see above; streamcap needs Python 3.11 or newer)"
  say "installed streamcap into $venv_dir"
fi

# 3. Config, rules and secrets: the admin's files once they exist, never overwritten.
etc=$root/etc/streamcap
mkdir -p "$etc"
if [ -e "$etc/streamcap.yaml" ]; then
  say "kept existing $etc/streamcap.yaml"
else
  install -m 0644 "$src/deploy/streamcap.example.yaml" "$etc/streamcap.yaml"
  say "created $etc/streamcap.yaml from deploy/streamcap.example.yaml: set cameras, mqtt.host and device_id"
fi
if [ -e "$etc/rules" ]; then
  say "kept existing $etc/rules/"
else
  mkdir -p "$etc/rules"
  install -m 0644 "$src"/rules/*.yaml "$etc/rules/"
  say "created $etc/rules/ from rules/*.yaml"
fi
if [ -e "$etc/streamcap.env" ]; then
  say "kept existing $etc/streamcap.env"
else
  (
    umask 077
    cat >"$etc/streamcap.env" <<'EOF'
# Environment of streamcap.service: the ${VARS} that /etc/streamcap/streamcap.yaml uses.
# systemd reads this file as root; keep it mode 0600.
#CAMERA_PASSWORD=
#MQTT_PASSWORD=
#MQTT_HOST=broker.example.lan
EOF
  )
  say "created $etc/streamcap.env (mode 0600): put the secrets the config names in it"
fi

# 4. The unit, its ExecStart pointing at this prefix.
units=$root/etc/systemd/system
mkdir -p "$units"
sed "s|/opt/streamcap/venv/|$prefix/venv/|g" "$src/deploy/streamcap.service" >"$units/streamcap.service"
chmod 0644 "$units/streamcap.service"
say "installed $units/streamcap.service (ExecStart=$prefix/venv/bin/streamcap)"

if [ "$systemctl" = 0 ]; then
  say "skipped: systemctl enable (--no-systemctl)"
elif [ -n "$root" ]; then
  systemctl --root="$root" enable streamcap.service
  say "enabled streamcap.service under $root"
else
  systemctl daemon-reload
  systemctl enable streamcap.service
  say "enabled streamcap.service; after editing the config and streamcap.env: systemctl start streamcap"
fi
