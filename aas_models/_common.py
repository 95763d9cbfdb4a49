"""Small helpers shared by the builders and the live-value writer."""

from __future__ import annotations

import re
from functools import lru_cache

from basyx.aas import model

# Characters allowed in XML 1.0 (and by the AAS schemas' string patterns); lxml refuses to write
# anything else, so one such character would make the whole XML/AASX export fail.
_XML_UNSAFE = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

MAX_IDENTIFIER = 2000  # AAS Identifier length limit


def xml_safe(text: str) -> bool:
    return _XML_UNSAFE.search(text) is None


@lru_cache(maxsize=4096)
def external_reference(iri: str) -> model.ExternalReference:
    """One shared object per IRI: basyx References and Keys are immutable (their __setattr__ raises) and have no
    parent, so every semanticId, supplementalSemanticId and valueId naming the same IRI can be the same object.
    Bounded: a configuration with more distinct IRIs only shares less."""
    return model.ExternalReference((model.Key(model.KeyTypes.GLOBAL_REFERENCE, iri),))
