"""micromine: micro mining over MQTT."""

__version__ = "0.1.0"
