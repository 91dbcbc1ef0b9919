"""How streamcap connects to a broker: the one definition the publisher and `streamcap ha` share.

Protocol, credentials, TLS, keepalive, connect timeout and reconnect delays
all come from `MqttConfig` here and nowhere else.

MQTT 5 is the default because its acknowledgements say what happened: a
PUBACK with a reason code >= 0x80 (mosquitto's ACL denial is 0x87 "Not
authorized") means the broker refused the message, and a DISCONNECT with 0x8E
"Session taken over" means another client logged in with our client id.
MQTT 3.1.1 stays for brokers that lack 5 (`mqtt.protocol: "3.1.1"`): its PUBACK
has no reason code, so a broker that refuses a publish still acknowledges it,
and an alarm refused that way is lost with no trace on our side.
"""
from __future__ import annotations

import paho.mqtt.client as mqtt

from streamcap.config.schema import MqttConfig, MqttProtocol
from streamcap.publish.base import PublisherUnavailable

PAHO_PROTOCOLS = {MqttProtocol.v5: mqtt.MQTTv5, MqttProtocol.v311: mqtt.MQTTv311}
SESSION_TAKEN_OVER = 0x8E  # MQTT 5 DISCONNECT reason: another client connected with our client id
AUTH_REASONS = ("not authorized", "bad user name or password")


def build_client(config: MqttConfig, client_id: str) -> mqtt.Client:
    """A paho client set up as streamcap connects (not connected yet); PublisherUnavailable if the TLS files do not load."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=PAHO_PROTOCOLS[config.protocol])
    if config.username:
        client.username_pw_set(config.username, config.password.get_secret_value() if config.password else None)
    if config.tls is not None:
        tls = config.tls
        try:
            client.tls_set(ca_certs=_str(tls.ca), certfile=_str(tls.certfile), keyfile=_str(tls.keyfile))
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise PublisherUnavailable(
                f"mqtt.tls: cannot load the certificates (ca={tls.ca}, certfile={tls.certfile}, keyfile={tls.keyfile}): {exc}"
            ) from None
        client.tls_insecure_set(tls.insecure)
    client.connect_timeout = config.connect_timeout_s  # TCP connect and TLS handshake; CONNACK is watched by the caller
    client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)
    return client


def connect_args(config: MqttConfig) -> dict:
    """Arguments of `connect` / `connect_async`."""
    return {"host": config.host, "port": config.port, "keepalive": config.keepalive_s}


def refused(reason_code) -> bool:
    """Did an acknowledgement say no? (MQTT 5 reason codes >= 0x80; 3.1.1 always says yes.)"""
    return bool(getattr(reason_code, "is_failure", False))


def reason_text(reason_code) -> str:
    """'Not authorized (0x87)': what a person can look up."""
    value = getattr(reason_code, "value", None)
    return f"{reason_code} (0x{value:02X})" if isinstance(value, int) else str(reason_code)


def _str(value) -> str | None:
    return None if value is None else str(value)
