"""Typed configuration: `load_config(path) -> StreamcapConfig`, errors as `file:line:col: path: message`."""
from streamcap.config.load import ConfigError, load_config
from streamcap.config.schema import StreamcapConfig

__all__ = ["ConfigError", "StreamcapConfig", "load_config"]
