"""Serialise a ShellEnvironment as AAS JSON, XML or AASX (call LiveValues.apply first)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from basyx.aas.adapter import aasx
from basyx.aas.adapter import json as aas_json
from basyx.aas.adapter import xml as aas_xml
from pyecma376_2.core_properties import OPCCoreProperties  # basyx's own AASX dependency

from .build import ShellEnvironment

Format = Literal["json", "xml", "aasx"]
FORMATS: tuple[Format, ...] = ("json", "xml", "aasx")

AASX_CREATOR = "edge-agent"


def dumps_json(env: ShellEnvironment) -> bytes:
    """The whole environment as AAS JSON (UTF-8, non-ASCII text unescaped)."""
    return aas_json.object_store_to_json(env.store, ensure_ascii=False).encode()


def write_environment(env: ShellEnvironment, fmt: Format, path: str | os.PathLike[str]) -> Path:
    """Write atomically: readers of `path` see the previous file or the complete new one, never a torn one."""
    target = Path(path)
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        if fmt == "json":
            temporary.write_bytes(dumps_json(env))
        elif fmt == "xml":
            aas_xml.write_aas_xml_file(temporary, env.store)
        elif fmt == "aasx":
            _write_aasx(env, temporary)
        else:
            raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
        os.chmod(temporary, 0o644)  # an export is made to be shared, whatever the writer's umask
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return target


def _write_aasx(env: ShellEnvironment, path: Path) -> None:
    properties = OPCCoreProperties()  # type: ignore[no-untyped-call]
    properties.creator = AASX_CREATOR
    properties.created = datetime.now(UTC)
    properties.title = ", ".join(shell.id_short for shell in env.shells)
    # failsafe=False: a dangling reference must fail the export, not vanish from the package with a log line.
    with aasx.AASXWriter(path, failsafe=False) as writer:
        writer.write_aas(
            [shell.id for shell in env.shells],
            env.store,
            aasx.DictSupplementaryFileContainer(),  # type: ignore[no-untyped-call]
        )
        writer.write_core_properties(properties)
