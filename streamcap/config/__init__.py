"""Typed configuration: `load_config(path) -> StreamcapConfig`."""
