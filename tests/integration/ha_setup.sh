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
RECIPE=2  # bump when this script installs something different: reinstalls over the old venv
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
venv=$(realpath -m "${STREAMCAP_HA_VENV:-$repo/.cache/ha-venv}")
python=${STREAMCAP_HA_PYTHON:-python3}
marker=$venv/.streamcap-ha-ready
log=$venv/ha_setup.log

if [[ $venv == "$repo/.venv" || $venv == "$repo" || $venv == / ]]; then
    echo "ha_setup: refusing to install Home Assistant into $venv (the project's own venv or tree)" >&2
    exit 2
fi
if [[ -d $venv && -n "$(ls -A "$venv")" && ! -f $venv/pyvenv.cfg ]]; then
    echo "ha_setup: refusing to install into $venv: it exists and is not a venv" >&2
    exit 2
fi

if [[ -f $marker && "$(head -n2 "$marker")" == "homeassistant==$HA_VERSION"$'\n'"recipe $RECIPE" ]]; then
    echo "ha_setup: Home Assistant $HA_VERSION already installed in $venv (nothing to do)"
    exit 0
fi

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] in ((3, 11), (3, 12)) else 1)'; then
    echo "ha_setup: Home Assistant $HA_VERSION needs Python 3.11 or 3.12; $python is $("$python" -V 2>&1)" >&2
    exit 2
fi

start=$SECONDS
if [[ ! -x $venv/bin/python ]]; then
    "$python" -m venv "$venv"
fi
rm -f "$marker"  # an older or half-done install is not "ready" until this run ends
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
cat >>"$constraints" <<'TXT'

# Added by streamcap's ha_setup.sh: not pinned by Home Assistant 2024.3, broken by later releases.
# josepy 2 dropped ComparableX509, which acme 2.8 (via hass-nabucasa, the cloud integration)
# imports; the tests do not load cloud, but without this pin it cannot even be imported.
josepy<2
TXT
"${pip[@]}" install --constraint "$constraints" "$wheels"/homeassistant-"$HA_VERSION"-*.whl >>"$log" 2>&1 \
    || fail "pip install homeassistant==$HA_VERSION"

# The requirements Home Assistant itself would pip-install at startup, from its manifests.
reqs_text=$("$venv/bin/python" - "$venv" 2>>"$log" <<'EOF'
import json
import sys
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
(Path(sys.argv[1]) / "ha-integrations.txt").write_text("\n".join(sorted(seen)) + "\n")
print("\n".join(sorted(reqs)))
EOF
) || fail "reading the integration manifests"
mapfile -t extra <<<"$reqs_text"
[[ -n $reqs_text ]] || fail "reading the integration manifests (no requirements found)"


"${pip[@]}" install --constraint "$constraints" "${extra[@]}" >>"$log" 2>&1 \
    || fail "pip install of the integration requirements"
# Import every integration that can load, as Home Assistant would: catches a dependency that
# pip resolved to a release newer than this Home Assistant works with.
"$venv/bin/python" - "$venv/ha-integrations.txt" >>"$log" 2>&1 <<'PY' || fail "importing the integrations"
import importlib
import sys
from pathlib import Path

domains = Path(sys.argv[1]).read_text().split()
for domain in domains:
    importlib.import_module(f"homeassistant.components.{domain}")
import hass_frontend, paho.mqtt.client  # noqa: E401,F401
print(f"imported {len(domains)} integrations")
PY

rm -rf "$wheels"
printf '%s\n' "homeassistant==$HA_VERSION" "recipe $RECIPE" "${extra[@]}" >"$marker"
echo "ha_setup: installed homeassistant==$HA_VERSION and ${#extra[@]} integration requirements (${extra[*]}) into $venv in $((SECONDS - start)) s"
