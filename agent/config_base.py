"""What every block of the configuration shares: the base model (unknown keys refused, frozen),
id, node-id, language-tag and text types, and the error the loader raises."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainValidator

from aas_models.text import is_language_tag
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


def _language_tag(v: str) -> str:
    if not is_language_tag(v):
        raise ValueError(f"{v!r} is not a well-formed BCP 47 language tag (e.g. ko-KR, en, de-DE)")
    return v


def _text(v: object) -> str | dict[str, str]:
    """A text: a string, or a map of language tag to text ({ko-KR: 스핀들 속도, en: spindle speed})."""
    if isinstance(v, str):
        if not v.strip():
            raise ValueError("the text is empty; leave the key out instead")
        return v.strip()
    if not isinstance(v, dict):
        raise ValueError("give a text, or a map of language tag to text such as {ko-KR: ..., en: ...}")
    if not v:
        raise ValueError("the map of language tag to text is empty")
    texts: dict[str, str] = {}
    for tag, text in v.items():
        if not isinstance(tag, str):
            raise ValueError(f"language tag {tag!r} must be text (quote it in YAML: 'no' and 'yes' are booleans)")
        _language_tag(tag)
        same = next((known for known in texts if known.lower() == tag.lower()), None)
        if same is not None:
            raise ValueError(f"{same!r} and {tag!r} are the same language (language tags ignore letter case)")
        if not isinstance(text, str):
            raise ValueError(f"the {tag} text must be text (quote a number in YAML), got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"the {tag} text is empty")
        texts[tag] = text.strip()
    return texts


PlainId = Annotated[str, AfterValidator(_plain_id)]
NodeId = Annotated[str, AfterValidator(_node_id)]
LanguageTag = Annotated[str, AfterValidator(_language_tag)]
# A text field: one string, tagged with site.language, or {language tag: text} with every language carried.
Text = Annotated[str | dict[str, str], PlainValidator(_text)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def secret_is_text(data: Any, key: str) -> Any:
    """For a `mode="before"` model validator: a secret given as a YAML number, boolean or mapping is
    refused before its field sees it, so the error carries the block (never shown) and not the
    value, which pydantic would report as the input that failed."""
    if isinstance(data, dict) and data.get(key) is not None and not isinstance(data[key], str):
        raise ValueError(
            f"{key} must be text, not a YAML {type(data[key]).__name__} (the value is a secret and not shown): "
            f'quote it ({key}: "...") or take it from ${{NAME}}, ${{file:PATH}} or ${{credential:NAME}}'
        )
    return data
