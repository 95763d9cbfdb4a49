"""Serialise a ShellEnvironment as AAS JSON, XML or AASX, metamodel 3.0 or 3.1 (call LiveValues.apply first).

3.1 is what basyx-python-sdk writes; 3.0 is carried over to aas-core3.0 and written by it (export30.py).
docs/aas.md says which tools read which.
"""

from __future__ import annotations

import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from basyx.aas import model
from basyx.aas.adapter import aasx
from basyx.aas.adapter import json as aas_json
from basyx.aas.adapter import xml as aas_xml
from pyecma376_2.core_properties import OPCCoreProperties  # basyx's own AASX dependency

from .build import ShellEnvironment

Format = Literal["json", "xml", "aasx"]
FORMATS: tuple[Format, ...] = ("json", "xml", "aasx")
EXTENSIONS: dict[str, Format] = {".json": "json", ".xml": "xml", ".aasx": "aasx"}

Metamodel = Literal["3.0", "3.1"]
METAMODELS: tuple[Metamodel, ...] = ("3.0", "3.1")
# 3.0 until the tools most customers use read 3.1: the IDTA test engines, AASX Package Explorer and BaSyx
# servers read 3.0 and refuse a 3.1 XML/AASX for its namespace alone.
DEFAULT_METAMODEL: Metamodel = "3.0"

AASX_CREATOR = "edge-agent"


class ExportError(ValueError):
    """The export cannot be written as asked; the message is one line, for a person."""


def format_for(path: str | os.PathLike[str], requested: str | None = None) -> Format:
    """The format `requested`, or the one the file name's extension says; ExportError if they disagree."""
    name = Path(path).name
    suffix = Path(path).suffix.lower()
    allowed = ", ".join(EXTENSIONS)
    implied = EXTENSIONS.get(suffix)
    if requested is None:
        if implied is None:
            raise ExportError(f"cannot tell the format of {name!r} from its extension: use {allowed} or --format")
        return implied
    chosen = next((fmt for fmt in FORMATS if fmt == requested), None)
    if chosen is None:
        raise ExportError(f"unknown export format {requested!r}; allowed: {', '.join(FORMATS)}")
    if implied is not None and implied != chosen:
        raise ExportError(
            f"--format {chosen} does not match the name {name!r} ({suffix} is {implied}): "
            f"name the file .{chosen} or use --format {implied}"
        )
    return chosen


def dumps_json(env: ShellEnvironment) -> bytes:
    """The whole environment as the SDK's metamodel 3.1 JSON (UTF-8, non-ASCII text unescaped)."""
    with env.store.kept():  # the lazy submodels (lazy.py) are built for this, each once
        return aas_json.object_store_to_json(env.store, ensure_ascii=False).encode()


def write_environment(
    env: ShellEnvironment,
    fmt: Format,
    path: str | os.PathLike[str],
    *,
    metamodel: Metamodel = DEFAULT_METAMODEL,
) -> Path:
    """Write atomically: readers of `path` see the previous file or the complete new one, never a torn one.

    ExportError (one line) when `metamodel` cannot carry the environment or `path` cannot be written.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if metamodel not in METAMODELS:
        raise ExportError(f"unknown metamodel version {metamodel!r}; allowed: {', '.join(METAMODELS)}")
    target = Path(path)
    if not target.parent.is_dir():
        raise ExportError(f"cannot write {target}: directory {target.parent} does not exist")
    temporary = target.with_name(f".{target.name}.tmp")
    try:
        with env.store.kept():  # the lazy submodels (lazy.py): built once for the checks and the writing
            _write(env, fmt, metamodel, temporary)
        os.chmod(temporary, 0o644)  # an export is made to be shared, whatever the writer's umask
        os.replace(temporary, target)
    except OSError as e:
        raise ExportError(f"cannot write {target}: {e.strerror or e}") from e
    finally:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
    return target


def _write(env: ShellEnvironment, fmt: Format, metamodel: Metamodel, path: Path) -> None:
    if metamodel == "3.1":
        if fmt == "json":
            path.write_bytes(dumps_json(env))
        elif fmt == "xml":
            aas_xml.write_aas_xml_file(path, env.store)
        else:
            _write_aasx(env, path)
        return
    from . import export30  # aas-core3.0 is loaded only when a 3.0 file is written

    environment = export30.convert(env)
    if fmt == "json":
        path.write_bytes(export30.dumps_json(environment))
    elif fmt == "xml":
        path.write_bytes(export30.dumps_xml(environment))
    else:
        export30.write_aasx(path, export30.dumps_xml(environment), _core_properties(env))


def _core_properties(env: ShellEnvironment) -> OPCCoreProperties:
    properties = OPCCoreProperties()  # type: ignore[no-untyped-call]
    properties.creator = AASX_CREATOR
    properties.created = datetime.now(UTC)
    properties.title = ", ".join(shell.id_short for shell in env.shells)
    return properties


def _write_aasx(env: ShellEnvironment, path: Path) -> None:
    """The whole environment in the package, as the 3.0 AASX: basyx's `write_aas` would take only the shells,
    their submodels and ConceptDescriptions named by ModelReference, leaving out the site's hierarchy submodel
    (no shell refers to it) and the ConceptDescriptions (elements name them by global reference)."""
    for shell in env.store:  # what write_aas(failsafe=False) checked: a dangling reference fails the export
        if isinstance(shell, model.AssetAdministrationShell):
            for reference in shell.submodel:
                try:
                    reference.resolve(env.store)
                except KeyError:
                    missing = f"shell {shell.id!r} refers to a submodel that is not there: {reference}"
                    raise ExportError(f"cannot package the AASX: {missing}") from None
    try:
        with aasx.AASXWriter(path, failsafe=False) as writer:
            writer.write_all_aas_objects(
                "/aasx/data.xml",
                env.store,
                aasx.DictSupplementaryFileContainer(),  # type: ignore[no-untyped-call]
            )
            writer.write_core_properties(_core_properties(env))
    except KeyError as e:
        raise ExportError(f"cannot package the AASX: {e.args[0] if e.args else e}") from e
