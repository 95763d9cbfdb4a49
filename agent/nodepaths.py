"""The browse paths learnt for the nodes a config names by node id, kept per source in the data dir.

`{data_dir}/nodes/{source id}.json`: {"version": 1, "endpoint": url, "paths": {node id: browse path}}.
The OPC UA adapter learns a node's path at its first resolve and, at every (re)connect, looks the node up
by that path too: when a PLC program download renumbered it, the path wins (adapters/opcua/conformance.py).
A file that cannot be read is treated as empty (paths are learnt again); one written for another endpoint
URL is not used, since the same node id there names something else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

VERSION = 1


def path_for(data_dir: Path, source_id: str) -> Path:
    return data_dir / "nodes" / f"{source_id}.json"


def load(file: Path, endpoint: str) -> dict[str, str]:
    try:
        doc = orjson.loads(file.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as e:
        log.warning("learnt browse paths in %s cannot be read (%s); they are learnt again", file, e)
        return {}
    if not isinstance(doc, dict) or doc.get("version") != VERSION or not isinstance(doc.get("paths"), dict):
        log.warning("learnt browse paths in %s are not in the expected form; they are learnt again", file)
        return {}
    if doc.get("endpoint") != endpoint:
        log.info(
            "learnt browse paths in %s are for %s, not %s; they are learnt again", file, doc.get("endpoint"), endpoint
        )
        return {}
    return {str(k): str(v) for k, v in doc["paths"].items() if isinstance(v, str)}


def save(file: Path, endpoint: str, paths: dict[str, str]) -> None:
    """Atomically (temp file, fsync, rename); raises OSError when the disk refuses."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(orjson.dumps({"version": VERSION, "endpoint": endpoint, "paths": paths}, option=orjson.OPT_INDENT_2))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
