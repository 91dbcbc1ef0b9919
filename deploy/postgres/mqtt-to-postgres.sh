#!/usr/bin/env bash
# Feed a central PostgreSQL (deploy/postgres/schema.sql) with every box's MQTT captions and alarms.
#
#   MQTT_HOST=broker.lan MQTT_USER=history MQTT_PASSWORD=... PGURL=postgresql://history@db.lan/site \
#     deploy/postgres/mqtt-to-postgres.sh
#
# Three standard tools, one message per SQL statement: mosquitto_sub prints each message as JSON (%J),
# jq (to-sql.jq) turns it into an INSERT with the topic and payload as quoted SQL literals (a payload
# can never be SQL), psql runs each statement as it arrives. The subscription is persistent (-c, a fixed client id,
# QoS 1): alarms published with QoS 1 (streamcap's default) wait at the broker while this is down;
# captions are QoS 0 by default (mqtt.qos_caption) and are not kept for it. Run it under systemd or
# compose with a restart policy.
#
# Environment: MQTT_HOST (localhost), MQTT_PORT (1883), MQTT_USER, MQTT_PASSWORD, MQTT_PREFIX (streamcap),
# MQTT_CLIENT_ID (streamcap-history-sink), PGURL (libpq connection string; PGPASSWORD etc. also work).
set -euo pipefail

prefix=${MQTT_PREFIX:-streamcap}
auth=()
[ -n "${MQTT_USER:-}" ] && auth+=(-u "$MQTT_USER")
[ -n "${MQTT_PASSWORD:-}" ] && auth+=(-P "$MQTT_PASSWORD")

mosquitto_sub -h "${MQTT_HOST:-localhost}" -p "${MQTT_PORT:-1883}" "${auth[@]}" \
    -i "${MQTT_CLIENT_ID:-streamcap-history-sink}" -c -q 1 \
    -t "$prefix/+/+/caption" -t "$prefix/+/+/alarm" -F '%J' \
  | jq --unbuffered -r -R -f "$(dirname "$0")/to-sql.jq" \
  | psql -X -q -v ON_ERROR_STOP=0 "${PGURL:?give PGURL, e.g. postgresql://user@host/db}"
