"""A fake of the smart-factory usage-log API for tests and demos (app.py); `python -m simulators.sflogapi` runs it."""

from simulators.sflogapi.app import FakeLogApi, Limits, serve

__all__ = ["FakeLogApi", "Limits", "serve"]
