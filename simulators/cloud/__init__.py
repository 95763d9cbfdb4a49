"""Reference KAMP-style cloud receiver: HTTP ingest of wire-format batches, stored once per record id.

Run it with `python -m simulators.cloud --help`, or from Python:

    with CloudReceiver(tmp_path / "cloud", tokens=["secret"]) as cloud:   # a real process
        ...cloud.url, cloud.db, cloud.set_faults(fail_next=1)...

    app = make_app(SQLiteStore(path), tokens=["secret"], test_controls=True)   # in-process (aiohttp)

docs/cloud-api.md is the contract; docs/openapi/cloud-ingest.yaml describes the same routes.
"""

from simulators.cloud.app import make_app
from simulators.cloud.faults import Faults
from simulators.cloud.process import CloudReceiver
from simulators.cloud.store import SQLiteStore, Store, StoreError, open_store

__all__ = ["CloudReceiver", "Faults", "SQLiteStore", "Store", "StoreError", "make_app", "open_store"]
