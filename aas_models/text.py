"""Texts in the AAS: a plain string, tagged with the environment's language, or language tag → text.

Every text the agent writes (nameplate MultiLanguageProperty values, displayNames, descriptions, the
IEC 61360 names and definitions of concept descriptions) goes through `lang_texts`, so one setting
decides the language of a plain string and a map carries every language it gives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ._common import xml_safe

DEFAULT_LANGUAGE = "ko-KR"

# A plain string (tagged with the environment's language) or {language tag: text}.
Text = str | Mapping[str, str]

NAME_LIMIT = 128  # MultiLanguageNameType (displayName)
TEXT_LIMIT = 1023  # MultiLanguageTextType (description, MultiLanguageProperty value), IEC 61360 definition

# RFC 5646 (BCP 47) well-formed language tag: langtag, private use or grandfathered. The same pattern as the
# official AAS schemas (3.1, and 3.0 but for extlang, see export30 D4) and basyx's LangStringSet.
_ALPHANUM = "[a-zA-Z0-9]"
_LANGTAG = (
    "([a-zA-Z]{2,3}(-[a-zA-Z]{3}(-[a-zA-Z]{3}){0,2})?|[a-zA-Z]{4}|[a-zA-Z]{5,8})"  # language (extlang)
    "(-[a-zA-Z]{4})?"  # script
    "(-([a-zA-Z]{2}|[0-9]{3}))?"  # region
    f"(-({_ALPHANUM}{{5,8}}|[0-9]{_ALPHANUM}{{3}}))*"  # variants
    f"(-[0-9A-WY-Za-wy-z](-{_ALPHANUM}{{2,8}})+)*"  # extensions
    f"(-[xX](-{_ALPHANUM}{{1,8}})+)?"  # private use
)
_GRANDFATHERED = (
    "en-GB-oed|i-ami|i-bnn|i-default|i-enochian|i-hak|i-klingon|i-lux|i-mingo|i-navajo|i-pwn|i-tao|i-tay|"
    "i-tsu|sgn-BE-FR|sgn-BE-NL|sgn-CH-DE|art-lojban|cel-gaulish|no-bok|no-nyn|zh-guoyu|zh-hakka|zh-min|"
    "zh-min-nan|zh-xiang"
)
_LANGUAGE_TAG = re.compile(f"{_LANGTAG}|[xX](-{_ALPHANUM}{{1,8}})+|{_GRANDFATHERED}")


def is_language_tag(tag: str) -> bool:
    """Whether `tag` is a well-formed BCP 47 language tag (ko-KR, en, zh-Hant-TW); registration is not checked."""
    return _LANGUAGE_TAG.fullmatch(tag) is not None


def is_english(tag: str) -> bool:
    """en, en-US, ...: what IEC 61360 (AASc-3a-002) wants a preferred name in."""
    return tag.lower() == "en" or tag.lower().startswith("en-")


def lang_texts(text: Text, language: str) -> dict[str, str]:
    """{language tag: text}: a plain string is tagged with `language`, a map is taken as it is."""
    return {language: text} if isinstance(text, str) else dict(text)


def text_problem(text: Text, language: str, limit: int = TEXT_LIMIT) -> str | None:
    """Why `text` cannot be an AAS lang string set (None if it can)."""
    texts = lang_texts(text, language)
    if not texts:
        return "give at least one language"
    seen: dict[str, str] = {}
    for tag, value in texts.items():
        if not isinstance(tag, str) or not is_language_tag(tag):
            return f"{tag!r} is not a well-formed BCP 47 language tag (e.g. ko-KR, en, de-DE)"
        if tag.lower() in seen:
            return f"{seen[tag.lower()]!r} and {tag!r} are the same language"
        seen[tag.lower()] = tag
        if not isinstance(value, str) or not value:
            return f"the {tag} text is empty"
        if not xml_safe(value):
            return f"the {tag} text contains characters XML cannot carry"
        if len(value) > limit:
            return f"the {tag} text has {len(value)} characters; at most {limit} are allowed here"
    return None
