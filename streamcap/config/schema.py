"""The typed configuration: one `StreamcapConfig`, built once, passed out in slices.

Validation here is pure: no network, no hardware probing, no file existence
checks (those belong to `app.build()`). Relative paths are resolved against the
config file's folder when `load_config` passes `context={"base_dir": ...}`;
models built directly in code keep paths as given.
"""
from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from streamcap.util.strenum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from streamcap.backend_kinds import BACKEND_CHOICES, PRECISIONS
from streamcap.camera_kinds import SCHEME_RE, SourceKind, resolve_kind
from streamcap.decoder_kinds import DecoderKind, DecoderLibrary
from streamcap.util.redact import redact_url

ID_PATTERN = r"^[a-z0-9_-]+$"
_ID_RE = re.compile(ID_PATTERN)


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, loaded configs are immutable."""

    # hide_input_in_errors: a bad camera URL may carry a password. allow_inf_nan: no .inf or .nan
    # anywhere; every number also has a documented range on its field.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic reads `true` as 1 for an int or float field; in a config that is always a mistake.
        if isinstance(value, bool) and info.field_name and _is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("a number is needed here, not true/false")
        return value


def _is_number(annotation: Any) -> bool:
    from typing import get_args

    return annotation in (int, float) or any(a in (int, float) for a in get_args(annotation))


def _check_id(value: str) -> str:
    if not _ID_RE.match(value):
        raise ValueError("ids must be lowercase letters, digits, '_' or '-' (they become MQTT topic segments)")
    return value


def check_timezone(value: str) -> str:
    """`value` if it is a known IANA time zone name (e.g. Europe/Paris)."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Paris") from None
    return value


def _resolve_path(value: Any, info: ValidationInfo) -> Any:
    """Relative paths are relative to the config file, not to the working directory."""
    base_dir = (info.context or {}).get("base_dir")
    if value is None or base_dir is None:
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return path if isinstance(value, Path) else str(path)
    joined = Path(os.path.normpath(Path(base_dir) / path))
    return joined if isinstance(value, Path) else str(joined)


Id = Annotated[str, Field(max_length=64), AfterValidator(_check_id)]
TimeZone = Annotated[str, AfterValidator(check_timezone)]
ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


# Names from streamcap.backend_kinds, the one list the backend selection reads too
# ("torch-cuda" is Backend.torch_cuda).
Backend = StrEnum("Backend", [(name.replace("-", "_"), name) for name in BACKEND_CHOICES])
Precision = StrEnum("Precision", [(name, name) for name in PRECISIONS])


class CameraConfig(StrictModel):
    kind: SourceKind = Field(
        default=SourceKind.auto,
        description="How to open `url`: auto (from the URL), rtsp, http, file, usb, or gstreamer (url is a pipeline ending in appsink).",
    )
    url: str = Field(
        description="rtsp://, rtsps://, http(s):// URL, a video file path, a USB camera index (0, 1, ...) or a GStreamer pipeline. "
        "Put credentials in ${ENV} variables; they are redacted in logs.",
    )
    enabled: bool = Field(default=True, description="Set false to keep the camera in the file but not open it.")
    loop: bool = Field(default=False, description="Restart a video file from the beginning when it ends (demos, tests).")
    caption_interval_s: float = Field(default=1.0, gt=0, le=3600, description="Seconds between frames sent to the captioner.")
    scene_change_threshold: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Skip a frame whose mean absolute difference from the last captioned frame (small grey thumbnail, 0..1) "
        "is below this. 0 = caption every sampled frame.",
    )
    open_timeout_s: float = Field(default=5.0, gt=0, le=120, description="Give up opening the stream after this many seconds.")
    read_timeout_s: float = Field(default=3.0, gt=0, le=120, description="A read that blocks longer than this counts as a dead stream.")
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60, description="First reconnect delay; doubles on each failure.")
    reconnect_max_s: float = Field(default=2.0, gt=0, le=3600, description="Upper bound of the reconnect delay: a camera that comes back is captioned again within about this.")
    snapshot: bool = Field(default=True, description="Allow JPEG snapshots of this camera in alarms.")
    decoder: DecoderKind | None = Field(
        default=None,
        description="Where this camera's video is decoded: auto, cpu, nvdec (NVIDIA GPU) or jetson (the Jetson's decoder). "
        "Default: the box's `decode.decoder`. A decoder this box lacks falls back to the CPU with one log line.",
    )
    mask: list[list[float]] = Field(
        default_factory=list,
        description="Regions the captioner does not see, each [x, y, width, height] as fractions of the frame "
        "(e.g. [0, 0, 0.4, 0.1] for a timestamp top left): on-screen text reads as traffic to the model. "
        "Snapshots and the page keep the whole picture.",
    )
    keyframes_only: bool = Field(
        default=True,
        description="Decode only key frames when the stream's key-frame interval, measured at connect, is no longer than "
        "caption_interval_s (far less CPU per camera); false decodes every frame and converts only those captioned.",
    )

    @field_validator("mask")
    @classmethod
    def _mask_regions(cls, regions: list[list[float]]) -> list[list[float]]:
        from streamcap.masks import region_error

        for k, region in enumerate(regions):
            if (error := region_error(region)) is not None:
                raise ValueError(f"region {k + 1} {error}")
        return regions

    @field_validator("url", mode="before")
    @classmethod
    def _url_to_str(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # `url: 0` means the first USB camera
        return value.strip() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str, info: ValidationInfo) -> str:
        if not url:
            raise ValueError("url is empty")
        kind = info.data.get("kind", SourceKind.auto)
        effective = resolve_kind(url, kind)
        if effective == SourceKind.file:
            return _resolve_path(url.removeprefix("file://"), info) if SCHEME_RE.match(url) else _resolve_path(url, info)
        return url

    @model_validator(mode="after")
    def _check_backoff(self) -> CameraConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self

    @property
    def resolved_kind(self) -> SourceKind:
        """The concrete source kind (never `auto`)."""
        return resolve_kind(self.url, self.kind)

    @property
    def display_url(self) -> str:
        """The URL with credentials masked: the only form that may be logged."""
        return redact_url(self.url)

    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "url" else value)


class ModelConfig(StrictModel):
    path: ConfigPath | None = Field(default=None, description="Caption checkpoint (.pt). Default: the model shipped with streamcap.")
    backend: Backend = Field(
        default=Backend.auto, description="Inference backend: auto (TensorRT if present, else ONNX Runtime, else torch), tensorrt, onnxruntime, torch, "
        "or one device of them: onnxruntime-cuda, onnxruntime-cpu, torch-cuda, torch-cpu."
    )
    beam_size: int | None = Field(default=None, ge=1, le=20, description="Beam width; 1 = greedy. Default: the checkpoint's.")
    length_penalty: float | None = Field(default=None, ge=0, le=10, description="Beam length penalty exponent. Default: the checkpoint's.")
    encoder_weights: ConfigPath | None = Field(default=None, description="Local ImageNet weights for the encoder (offline installs).")
    max_batch: int = Field(default=8, ge=1, le=256, description="Most frames encoded together in one batch.")
    max_wait_ms: float = Field(default=50.0, ge=0, le=10_000, description="Longest a frame waits for a batch to fill before it is encoded anyway.")
    precision: Precision = Field(default=Precision.fp32, description="Numeric precision of the encoder: fp32, fp16 (GPU), int8 (TensorRT).")
    input_size: int | None = Field(
        default=None, ge=224, le=640, multiple_of=32,
        description="Side of the square the encoder sees, in pixels: larger sees smaller things, at about (side/224)^2 the cost. "
        "Default: the model's own (224 for the shipped one).",
    )


class DecodeConfig(StrictModel):
    decoder: DecoderKind = Field(
        default=DecoderKind.auto,
        description="The box's default decoder for its cameras: auto (the Jetson's or an NVIDIA GPU's decoder where "
        "present and usable, else the CPU), cpu, nvdec or jetson. A camera's own `decoder` overrides it.",
    )
    library: DecoderLibrary = Field(
        default=DecoderLibrary.auto,
        description="What decodes: auto (PyAV where installed, else OpenCV), pyav, or opencv.",
    )
    threads_per_camera: int = Field(
        default=1, ge=0, le=16,
        description="FFmpeg decoding threads per camera. 1 keeps a box of many cameras from drowning in threads; "
        "0 is FFmpeg's own default of one per core for every camera (only for comparison).",
    )


class RulesConfig(StrictModel):
    paths: list[str] = Field(default_factory=list, description="Rule files or globs (rules/*.yaml), relative to this config file.")
    reload: bool = Field(default=True, description="Reload rule files when they change; a bad edit keeps the old rules.")
    reload_interval_s: float = Field(default=2.0, gt=0, le=3600, description="How often rule files are checked for changes.")

    @field_validator("paths")
    @classmethod
    def _resolve(cls, paths: list[str], info: ValidationInfo) -> list[str]:
        return [_resolve_path(p, info) for p in paths]


class MqttTlsConfig(StrictModel):
    ca: ConfigPath | None = Field(default=None, description="CA certificate (PEM) that signed the broker's certificate. Default: system CAs.")
    certfile: ConfigPath | None = Field(default=None, description="Client certificate (PEM) for mutual TLS.")
    keyfile: ConfigPath | None = Field(default=None, description="Private key (PEM) of the client certificate.")
    insecure: bool = Field(default=False, description="Skip broker hostname verification (testing only).")

    @model_validator(mode="after")
    def _check_pair(self) -> MqttTlsConfig:
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile needs certfile")
        return self


_TOPIC_LEVEL_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _check_topic_level(value: str) -> str:
    if not _TOPIC_LEVEL_RE.match(value):
        raise ValueError("must be one MQTT topic level: letters, digits, '_' or '-' (no '/', '+', '#' or spaces)")
    return value


TopicLevel = Annotated[str, AfterValidator(_check_topic_level)]


class HomeAssistantConfig(StrictModel):
    enabled: bool = Field(default=True, description="Publish MQTT discovery configs so Home Assistant shows the box, its cameras and rules.")
    prefix: TopicLevel = Field(default="homeassistant", description="Home Assistant's discovery prefix (its MQTT integration setting).")


class MqttProtocol(StrEnum):
    v5 = "5"  # PUBACK reason codes: a refused publish is known as refused
    v311 = "3.1.1"  # for brokers without MQTT 5: a refused publish is acknowledged like a delivered one


class MqttConfig(StrictModel):
    host: str = Field(min_length=1, max_length=253, description="Broker host name or IP address.")
    port: int = Field(default=1883, ge=1, le=65535, description="Broker port (1883 plain, 8883 TLS).")
    prefix: str = Field(default="streamcap", description="First topic level(s): <prefix>/<device>/...")
    username: str | None = Field(default=None, description="Broker user name.")
    password: SecretStr | None = Field(default=None, description="Broker password; use ${ENV_VAR}. Never logged.")
    tls: MqttTlsConfig | None = Field(default=None, description="Connect with TLS; omit for plain MQTT.")
    client_id: str | None = Field(default=None, max_length=200, description="MQTT client id. Default: streamcap-<device_id>.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keepalive; the broker publishes the offline will after ~1.5x this.")
    protocol: MqttProtocol = Field(default=MqttProtocol.v5, description=(
        'MQTT version: "5" (default) reports a publish the broker refuses (e.g. an ACL denial), which stays in the '
        'spool and makes /healthz failed; "3.1.1" is for brokers without MQTT 5, and with it a refused alarm is '
        "acknowledged like a delivered one and lost without a trace."))
    connect_timeout_s: float = Field(default=5.0, ge=1, le=120, description=(
        "How long to wait for the broker to answer a connection (TCP, TLS, CONNACK) before trying again: a broker "
        "that accepts TCP and never answers is left after this."))
    qos_caption: int = Field(default=0, ge=0, le=2, description="QoS of caption messages (frequent, 0 is fine).")
    qos_alarm: int = Field(default=1, ge=0, le=2, description=(
        "QoS of alarm messages. At 1 (the default) with MQTT 5 a refused alarm is seen; paho ignores the reason "
        "code of a QoS 2 refusal, and QoS 0 has no acknowledgement at all."))
    qos_status: int = Field(default=1, ge=0, le=2, description="QoS of the retained status message.")
    spool_dir: Path = Field(default=Path(".streamcap/spool"), description="Where alarms wait on disk while the broker is unreachable.")
    spool_max_messages: int = Field(default=10000, ge=1, le=10_000_000, description="Oldest spooled alarms are dropped beyond this many.")
    spool_durable: bool = Field(default=True, description="fsync each spooled alarm: it survives a power cut, not just a crash.")
    spool_memory_messages: int = Field(default=1000, ge=1, le=100_000, description=(
        "Alarm messages (each with its snapshot JPEG) kept in memory while the spool's disk is full; beyond this the "
        "oldest are dropped and counted (streamcap_drops_total{cause=\"spool_full\"})."))
    publish_snapshots: bool = Field(default=True, description="Publish alarm snapshots (JPEG) on <prefix>/<device>/<camera>/snapshot.")
    max_pending_captions: int = Field(default=100, ge=1, le=100_000, description="Captions waiting to be written to the broker; beyond this they are dropped (and counted).")
    alarm_window: int = Field(default=1, ge=1, le=1000, description="Alarm messages awaiting the broker's acknowledgement at once; 1 keeps order through any broker.")
    reconnect_min_s: float = Field(default=0.5, gt=0, le=60, description="First delay before reconnecting to the broker.")
    reconnect_max_s: float = Field(default=2.0, gt=0, le=300, description="Longest delay between reconnect attempts: the broker is back within this of returning.")
    refused_retry_s: float = Field(default=30.0, ge=1, le=3600, description=(
        "How often alarm messages the broker refused (MQTT 5 reason code, e.g. an ACL denial) are offered again; "
        "they wait in the spool meanwhile, and the next ones on other topics still go."))
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig, description="Home Assistant MQTT discovery.")

    @field_validator("prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        levels = value.split("/")
        if len(value) > 200 or not all(_TOPIC_LEVEL_RE.match(level) for level in levels):
            raise ValueError("prefix must be topic levels of letters, digits, '_' or '-' joined by '/' "
                             "(no '#', '+', spaces, empty levels or a leading/trailing '/')")
        return value

    @field_validator("spool_dir")
    @classmethod
    def _resolve_spool(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_as_text(cls, value: Any) -> Any:
        # YAML reads `protocol: 5` as a number.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _check_credentials(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def tls_enabled(self) -> bool:
        return self.tls is not None

    def client_id_for(self, device_id: str) -> str:
        # Stable per device: a restarted process takes over its old session.
        return self.client_id or f"streamcap-{device_id}"


class OutputsConfig(StrictModel):
    console: bool = Field(default=True, description="Print captions and alarms on the console.")
    jsonl: ConfigPath | None = Field(default=None, description="Append captions and alarms as JSON lines to this file.")


class HttpAuthConfig(StrictModel):
    token: SecretStr | None = Field(default=None, description="A bearer token (use ${ENV_VAR}); open the page once as /?token=... to log in.")
    username: str | None = Field(default=None, max_length=100, description="Basic-auth user name.")
    password: SecretStr | None = Field(default=None, description="Basic-auth password (use ${ENV_VAR}).")

    @model_validator(mode="after")
    def _check(self) -> HttpAuthConfig:
        if self.token is None and self.username is None:
            raise ValueError("give a token, or a username and password")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        if self.token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{16,200}", self.token.get_secret_value()):
            raise ValueError("the token must be 16 or more letters, digits or ._~- (e.g. from `openssl rand -hex 24`)")
        return self


def _is_loopback(host: str) -> bool:
    """An address in 127.0.0.0/8 or ::1, or the name localhost (RFC 6761); any other name is not."""
    if host.lower().rstrip(".") == "localhost":  # the server checks the address it actually binds, too
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


_HOST_NAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$", re.IGNORECASE)


def _check_host_name(name: str) -> str:
    if not _HOST_NAME_RE.match(name):
        raise ValueError(f"{name!r} is not a host name (letters, digits, - and _ in dot-separated labels, no port)")
    return name.lower().rstrip(".")


class HttpConfig(StrictModel):
    enabled: bool = Field(default=False, description="Serve the live page (/), /metrics (Prometheus) and /healthz.")
    host: str = Field(default="127.0.0.1", description="Address to bind; anything but loopback (e.g. 0.0.0.0) needs `auth`.")
    port: int = Field(default=9108, ge=1, le=65535, description="HTTP port.")
    page: bool = Field(default=True, description="Serve the live page: camera tiles, captions, alarms, updated live.")
    auth: HttpAuthConfig | None = Field(default=None, description="Token or basic auth; required when host is not loopback.")
    allowed_hosts: list[Annotated[str, AfterValidator(_check_host_name)]] = Field(
        default_factory=list, max_length=100,
        description="Host names, besides IP addresses, localhost and `host`, under which the page may be opened "
                    "(e.g. cctv.example.lan); requests naming any other host get 403 (a guard against DNS rebinding).")
    max_connections: int = Field(default=64, ge=4, le=4096,
                                 description="Open HTTP connections at most; one more gets 503 (or evicts the oldest "
                                             "connection still sending its request).")
    max_event_streams: int = Field(default=16, ge=1, le=1024,
                                   description="Live pages open at once (each holds an event stream); one more gets 503. "
                                               "Must be below max_connections.")
    header_timeout_s: float = Field(default=5.0, ge=0.5, le=60,
                                    description="A client must send its whole request head within this, else 408.")

    @model_validator(mode="after")
    def _check_limits(self) -> HttpConfig:
        if self.max_event_streams >= self.max_connections:
            raise ValueError(f"max_event_streams ({self.max_event_streams}) must be below max_connections "
                             f"({self.max_connections}), so pages and metrics can still be served")
        return self

    @model_validator(mode="after")
    def _check_exposure(self) -> HttpConfig:
        if self.enabled and not _is_loopback(self.host) and self.auth is None:
            raise ValueError(f"host {self.host} exposes the page and metrics on the network: add auth (a token or a "
                             "username and password from the environment), or bind 127.0.0.1")
        return self


class HistoryConfig(StrictModel):
    enabled: bool = Field(default=True, description="Keep a searchable history of what the cameras saw (SQLite under `path`); "
                          "`streamcap history search|summary` and the page's search read it.")
    path: Path = Field(default=Path(".streamcap/history"), validate_default=True,
                       description="Folder of the history database (history.db) and its thumbnails, relative to this "
                       "file; put it in the box's state folder on a real disk.")
    raw_days: float = Field(default=3.0, gt=0, le=365, description="Keep every single caption this many days; after that only "
                            "segments (runs of captions that say the same thing) remain.")
    retain_days: float = Field(default=30.0, gt=0, le=3650, description="Delete segments and alarms older than this many days.")
    max_size_mb: int = Field(default=2048, ge=16, le=10_000_000, description="Most megabytes the database may use; beyond it the "
                             "oldest single captions go first, then the oldest segments.")
    thumbnails: bool = Field(default=True, description="Save a small JPEG at the start of each segment and for each alarm.")
    thumbnail_interval_s: float = Field(default=10.0, ge=0, le=3600, description="At most one thumbnail per camera this often; "
                                        "a segment beginning sooner shows the camera's previous one.")
    thumbnail_max_mb: int = Field(default=1024, ge=1, le=10_000_000, description="Most megabytes of thumbnails; the oldest are deleted first.")
    segment_max_s: float = Field(default=3600.0, ge=60, le=86_400, description="A segment lasting longer is closed and a new one "
                                 "begins (a fresh thumbnail; single captions age out in steps of this).")
    concept_threshold: float = Field(default=0.5, gt=0, lt=1, description="A concept at or above this probability is present; "
                                     "a concept appearing or leaving ends a segment.")
    max_new_words: float = Field(default=0.34, ge=0, le=1, description="A caption stays in the segment when at most this share "
                                 "of its words (not counting a, the, on...) is new to the segment, and it names no new object.")
    max_pending: int = Field(default=5000, ge=10, le=1_000_000, description="Captions and alarms waiting for the history writer; "
                             "beyond this they are not written (and counted in /metrics).")

    @field_validator("path")
    @classmethod
    def _resolve_folder(cls, value: Path, info: ValidationInfo) -> Path:
        return _resolve_path(value, info)

    @model_validator(mode="after")
    def _check_windows(self) -> HistoryConfig:
        if self.raw_days > self.retain_days:
            raise ValueError("raw_days must be <= retain_days (single captions cannot outlive their segments)")
        return self
class SnapshotsConfig(StrictModel):
    memory_mb: int = Field(
        default=256, ge=16, le=65_536,
        description="Memory for the captioned frames kept for alarm snapshots and the live page (each camera's "
                    "newest few; the oldest go first). A 720p frame takes 2.8 MB, a 1080p one 6.2 MB: give at least "
                    "model.max_batch frames, so an alarm always finds its frame.")


class StreamcapConfig(StrictModel):
    device_id: Id = Field(default="streamcap", description="This box's id in MQTT topics; keeps several boxes on one broker apart.")
    timezone: TimeZone = Field(default="UTC", description="IANA time zone for rule schedules (e.g. Europe/Paris).")
    cameras: dict[Id, CameraConfig] = Field(default_factory=dict, description="Cameras by id; ids become MQTT topic segments.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Caption model and inference settings.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="How camera video is decoded (the box's defaults).")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Alert rule files.")
    mqtt: MqttConfig | None = Field(default=None, description="MQTT broker; omit to run without one.")
    outputs: OutputsConfig = Field(default_factory=OutputsConfig, description="Local outputs (console, JSON lines).")
    http: HttpConfig = Field(default_factory=HttpConfig, description="Metrics and health endpoint.")
    # Validated from {} (not built bare) so the default folder is resolved against the config file too.
    history: HistoryConfig = Field(default_factory=dict, validate_default=True, description="The searchable caption history of this box.")
    snapshots: SnapshotsConfig = Field(default_factory=SnapshotsConfig, description="Frames kept for alarm snapshots and the page.")
    _document: Any = PrivateAttr(default=None)  # the YamlDocument it was loaded from, for positions in later errors

    def __eq__(self, other: object) -> bool:  # where a config came from is not part of what it says
        return isinstance(other, StreamcapConfig) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]

    def where(self, loc: tuple) -> str:
        """`file:line:col` of a config value, for errors found after loading; "" for a config built in code."""
        return self._document.where(loc) if self._document is not None else ""

    @property
    def enabled_cameras(self) -> dict[str, CameraConfig]:
        return {cid: cam for cid, cam in self.cameras.items() if cam.enabled}
