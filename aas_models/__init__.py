"""Asset Administration Shell models (basyx-python-sdk). Knows AAS, nothing of OPC UA sessions or MQTT."""
