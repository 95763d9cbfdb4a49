"""Store-and-forward: the durable buffer, the wire format and the northbound sinks. Knows nothing of OPC UA."""
