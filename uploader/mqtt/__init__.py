"""The MQTT sink (paho-mqtt): QoS 1, a message counts as delivered once the broker PUBACKed it."""

from uploader.mqtt.settings import MqttConfigError, MqttSettings, data_topic, status_topic
from uploader.mqtt.sink import MqttSink
from uploader.tls import TlsSettings

__all__ = ["MqttConfigError", "MqttSettings", "MqttSink", "TlsSettings", "data_topic", "status_topic"]
