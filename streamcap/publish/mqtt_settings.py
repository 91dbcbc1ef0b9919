"""The plain settings MqttPublisher needs, decoupled from the config schema.

app.py builds them with `MqttSettings.from_config(cfg.mqtt, cfg.device_id)`;
tests and benchmarks construct them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    prefix: str = "streamcap"
    device_id: str = "streamcap"
    client_id: str | None = None  # None: "streamcap-<device>"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    tls_insecure: bool = False  # skip the broker hostname check (self-signed lab setups)
    use_tls: bool = False  # TLS with the system CAs even without tls_ca
    keepalive_s: int = 60
    qos_caption: int = 0
    qos_alarm: int = 1
    qos_status: int = 1
    spool_dir: str = ".streamcap/spool"
    spool_max_messages: int = 10_000
    spool_durable: bool = True  # fsync each spooled alarm (survives power loss, not just a crash)
    publish_snapshots: bool = True
    max_pending_captions: int = 100  # captions paho has not written yet; beyond this they are dropped
    alarm_window: int = 1  # alarms awaiting PUBACK at once; 1 keeps order even through odd brokers
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60

    def __post_init__(self) -> None:
        for name in ("qos_caption", "qos_alarm", "qos_status"):
            if getattr(self, name) not in (0, 1, 2):
                raise ValueError(f"mqtt.{name} must be 0, 1 or 2, got {getattr(self, name)}")
        if self.alarm_window < 1:
            raise ValueError(f"mqtt alarm_window must be >= 1, got {self.alarm_window}")
        if self.client_id is None:
            # Stable per device: a restarted process takes over its old session.
            object.__setattr__(self, "client_id", f"streamcap-{self.device_id}")

    @property
    def tls_enabled(self) -> bool:
        return self.use_tls or bool(self.tls_ca or self.tls_certfile)

    @classmethod
    def from_config(cls, mqtt_cfg, device_id: str, **overrides) -> "MqttSettings":
        """From the pydantic MqttConfig (streamcap.config): field names match,
        the password is a SecretStr and TLS is an optional nested block."""
        password = mqtt_cfg.password
        if password is not None and hasattr(password, "get_secret_value"):
            password = password.get_secret_value()
        tls = getattr(mqtt_cfg, "tls", None)
        values = dict(
            host=mqtt_cfg.host, port=mqtt_cfg.port, prefix=mqtt_cfg.prefix, device_id=device_id,
            client_id=mqtt_cfg.client_id, username=mqtt_cfg.username, password=password,
            keepalive_s=mqtt_cfg.keepalive_s, qos_caption=mqtt_cfg.qos_caption, qos_alarm=mqtt_cfg.qos_alarm,
            qos_status=mqtt_cfg.qos_status, spool_dir=str(mqtt_cfg.spool_dir),
            spool_max_messages=mqtt_cfg.spool_max_messages, publish_snapshots=mqtt_cfg.publish_snapshots,
        )
        if tls is not None:
            values.update(
                use_tls=True,
                tls_ca=_str_or_none(tls.ca), tls_certfile=_str_or_none(tls.certfile),
                tls_keyfile=_str_or_none(tls.keyfile), tls_insecure=bool(tls.insecure),
            )
        values.update(overrides)
        return cls(**values)


def _str_or_none(value) -> str | None:
    return None if value is None else str(value)
