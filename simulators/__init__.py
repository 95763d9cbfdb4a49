"""Simulators used by tests and the demo: an OPC UA factory, a reference cloud receiver (`cloud`) and a
fake of the programme's usage-log API (`sflogapi`).

The agent never imports this package.
"""
