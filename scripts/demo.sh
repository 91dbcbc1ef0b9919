#!/usr/bin/env bash
# Set up (first run only) and run streamcap on its embedded default: a built-in
# sample stream, the shipped model, console output. Extra arguments go to
# `streamcap demo`, e.g. `scripts/demo.sh --mqtt-host 127.0.0.1`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec .venv/bin/streamcap demo "$@"
