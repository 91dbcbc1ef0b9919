#!/usr/bin/env bash
# Install a real Home Assistant for the integration tests (tests/integration/ha_fixtures.py)
# into its own venv: ${STREAMCAP_HA_VENV:-<repo>/.cache/ha-venv}. Never touches the project's .venv.
#
#   bash tests/integration/ha_setup.sh
#
# Idempotent: a marker file in the venv makes a second run exit 0 at once. Besides
# homeassistant itself it preinstalls the requirements of every integration that a
# config with http, api, onboarding, logger and an MQTT config entry loads (the
# bootstrap defaults, their dependencies and after-dependencies, and every MQTT
# platform), read from the installed manifests, so the tests can run `hass --skip-pip`
# without PyPI. Prints one line saying what it did; pip's output goes to
# <venv>/ha_setup.log (its tail is shown on failure).
set -euo pipefail

HA_VERSION=2024.3.3
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=${STREAMCAP_HA_VENV:-$repo/.cache/ha-venv}
python=${STREAMCAP_HA_PYTHON:-python3}
marker=$venv/.streamcap-ha-ready
log=$venv/ha_setup.log

if [[ -f $marker && "$(head -n1 "$marker")" == "homeassistant==$HA_VERSION" ]]; then
    echo "ha_setup: Home Assistant $HA_VERSION already installed in $venv (nothing to do)"
    exit 0
fi

mkdir -p "$(dirname "$venv")"
venv=$(cd "$(dirname "$venv")" && pwd)/$(basename "$venv")
marker=$venv/.streamcap-ha-ready
log=$venv/ha_setup.log
if [[ $venv == "$repo/.venv" || $venv == "$repo" ]]; then
    echo "ha_setup: refusing to install Home Assistant into $venv (the project's own venv)" >&2
    exit 2
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
    echo "ha_setup: Home Assistant $HA_VERSION needs Python 3.11 or 3.12; $python is $("$python" -V 2>&1)" >&2
    exit 2
fi

start=$SECONDS
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
fi
: >"$log"

fail() {
    echo "ha_setup: $1 failed; last lines of $log:" >&2
    tail -n 25 "$log" >&2
    exit 1
}

# pip is mostly waiting on downloads and unpacking; stay polite to other work on the machine.
pip=(nice -n 10 "$venv/bin/python" -m pip --disable-pip-version-check)
# Home Assistant pins its whole dependency tree in homeassistant/package_constraints.txt
# (which it also installs integration requirements with). Without it pip backtracks for
# minutes and picks newer bluetooth libraries than 2024.3 was released with, so take the
# file from the wheel first and install everything under it.
wheels=$venv/wheels
"${pip[@]}" download --no-deps --only-binary :all: --dest "$wheels" "homeassistant==$HA_VERSION" >>"$log" 2>&1 \
    || fail "pip download homeassistant==$HA_VERSION"
constraints=$venv/ha-package-constraints.txt
"$venv/bin/python" - "$wheels" "$HA_VERSION" "$constraints" >>"$log" 2>&1 <<'PY' || fail "reading package_constraints.txt from the wheel"
import sys
import zipfile
from pathlib import Path

wheels, version, out = sys.argv[1:]
wheel = next(Path(wheels).glob(f"homeassistant-{version}-*.whl"))
with zipfile.ZipFile(wheel) as zf:
    Path(out).write_bytes(zf.read("homeassistant/package_constraints.txt"))
PY
"${pip[@]}" install --constraint "$constraints" "$wheels"/homeassistant-"$HA_VERSION"-*.whl >>"$log" 2>&1 \
    || fail "pip install homeassistant==$HA_VERSION"

# The requirements Home Assistant itself would pip-install at startup, from its manifests.
reqs_text=$("$venv/bin/python" - 2>>"$log" <<'EOF'
import json
from pathlib import Path

import homeassistant
from homeassistant import bootstrap, requirements
from homeassistant.components.mqtt.const import PLATFORMS

components = Path(homeassistant.__file__).parent / "components"
# What tests/integration/ha_fixtures.py configures, plus what bootstrap always sets up.
todo = {"homeassistant", "http", "api", "auth", "onboarding", "logger", "system_log", "config",
        "websocket_api", "mqtt", *bootstrap.CORE_INTEGRATIONS, *bootstrap.DEFAULT_INTEGRATIONS,
        *(str(platform) for platform in PLATFORMS)}
seen: set[str] = set()
reqs: set[str] = set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest_path = components / domain / "manifest.json"
    if not manifest_path.exists():
        continue
    manifest = json.loads(manifest_path.read_text())
    reqs.update(manifest.get("requirements", []))
    # Same walk as homeassistant/requirements.py: dependencies, after-dependencies and
    # the discovery integrations a manifest asks for.
    todo.update(manifest.get("dependencies", []), manifest.get("after_dependencies", []))
    for discovery_domain, keys in requirements.DISCOVERY_INTEGRATIONS.items():
        if any(key in manifest for key in keys):
            todo.add(discovery_domain)
print("\n".join(sorted(reqs)))
EOF
) || fail "reading the integration manifests"
mapfile -t extra <<<"$reqs_text"
[[ -n $reqs_text ]] || fail "reading the integration manifests (no requirements found)"


"${pip[@]}" install --constraint "$constraints" "${extra[@]}" >>"$log" 2>&1 \
    || fail "pip install of the integration requirements"
"$venv/bin/python" -c 'import homeassistant.components.mqtt, paho.mqtt.client, hass_frontend' >>"$log" 2>&1 \
    || fail "importing the MQTT integration"

rm -rf "$wheels"
printf '%s\n' "homeassistant==$HA_VERSION" "${extra[@]}" >"$marker"
echo "ha_setup: installed homeassistant==$HA_VERSION and ${#extra[@]} integration requirements (${extra[*]}) into $venv in $((SECONDS - start)) s"
