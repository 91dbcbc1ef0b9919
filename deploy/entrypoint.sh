#!/usr/bin/env bash
# Entrypoint of the three streamcap images (deploy/Dockerfile, Dockerfile.cuda, Dockerfile.jetson).
#
#   no arguments, or options     streamcap run -c "$STREAMCAP_CONFIG" [options]   e.g. --duration 60
#   a streamcap command          that command as is     e.g. config show /config/streamcap.yaml, build-engine
#
# Environment (the images set all of these):
#   STREAMCAP_CONFIG     the config file (default /config/streamcap.yaml)
#   STREAMCAP_SPOOL_DIR  the alarm spool: mqtt.spool_dir of the example config (default /data/spool)
#   STREAMCAP_HISTORY_DIR  the caption history: history.path of the example config (default /data/history)
#   XDG_CACHE_HOME       streamcap keeps ONNX exports and TensorRT engines in $XDG_CACHE_HOME/streamcap
#                        (default /data/cache)
#   STREAMCAP_CMD        the streamcap program (default: streamcap on PATH)
# streamcap is exec'd: it is PID 1 of the container and gets SIGTERM from `docker stop` itself.
set -euo pipefail

config=${STREAMCAP_CONFIG:-/config/streamcap.yaml}
spool=${STREAMCAP_SPOOL_DIR:-/data/spool}
history=${STREAMCAP_HISTORY_DIR:-/data/history}
streamcap=${STREAMCAP_CMD:-streamcap}
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/data/cache}

fail() {
  echo "streamcap entrypoint: $*" >&2
  exit 2
}

for dir in "$spool" "$history" "$XDG_CACHE_HOME"; do
  if ! mkdir -p "$dir" 2>/dev/null || [ ! -w "$dir" ]; then
    fail "$dir is not writable by uid $(id -u): mount a volume at $(dirname "$dir") that this user may write (the images run as user streamcap)"
  fi
done

if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$streamcap" "$@"
fi

if [ ! -f "$config" ]; then
  fail "no config file at $config: mount a folder holding streamcap.yaml at $(dirname "$config") (compose: deploy/config/), or set STREAMCAP_CONFIG"
fi
# Every problem of the config and its rule files, as file:line:col lines, before anything starts.
"$streamcap" config check "$config" || exit $?
exec "$streamcap" run -c "$config" "$@"
