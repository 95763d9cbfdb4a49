"""Simulators used by tests and the demo: an OPC UA factory and (later) a reference cloud receiver.

The agent never imports this package.
"""
