"""What every block of the configuration shares: the base model (unknown keys refused, frozen),
id and node-id types, and the error the loader raises."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from adapters.opcua.values import node_id_problem

ID_SHORT = re.compile(r"^[A-Za-z][A-Za-z0-9_]+$")
PLAIN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ConfigError(Exception):
    """The configuration cannot be used. The message is for the person who wrote the file."""


def _plain_id(v: str) -> str:
    if not PLAIN_ID.match(v):
        raise ValueError("use letters, digits, '_', '-' or '.', starting with a letter or digit")
    return v


def _node_id(v: str) -> str:
    problem = node_id_problem(v)
    if problem:
        raise ValueError(problem)
    return v


PlainId = Annotated[str, AfterValidator(_plain_id)]
NodeId = Annotated[str, AfterValidator(_node_id)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
