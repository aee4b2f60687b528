"""XML-RPC callbacks, the way Drupal's Services module (and WordPress) speak them.

The call is built with the standard library, so it is exactly what any XML-RPC server
expects: ``method(event_id, event_type, result)`` where ``result`` is a struct. XML-RPC
has no null (``<nil/>`` is a non-standard extension many servers reject) and only
32-bit integers, so values are made representable first: ``None`` members are dropped,
bigger integers travel as strings, non-string struct keys become strings.

The response comes from a site we do not control, so it is parsed with defusedxml's
expat parser: a DTD, an entity declaration or an external reference is refused before
anything is expanded (the "billion laughs" response cannot blow up the worker).
"""

from __future__ import annotations

import datetime as dt
import logging
import xmlrpc.client
from collections.abc import Mapping
from typing import Any
from xml.parsers.expat import ExpatError

from defusedxml.common import DefusedXmlException
from defusedxml.xmlrpc import DefusedExpatParser

from backchannel.errors import CallbackError

log = logging.getLogger(__name__)

_MAX_INT = 2**31 - 1
_MIN_INT = -(2**31)
FAULT_TEXT_LIMIT = 200


def to_xmlrpc(value: Any) -> Any:
    """``value`` made representable in standard XML-RPC (see the module docstring).

    ``None`` inside a struct or array is dropped; a top-level ``None`` becomes ``""``.
    Types XML-RPC has no word for travel as their ``str()``.
    """
    if value is None:
        return ""
    if isinstance(value, bool | float | str | dt.datetime | xmlrpc.client.Binary):
        return value
    if isinstance(value, int):
        return value if _MIN_INT <= value <= _MAX_INT else str(value)
    if isinstance(value, bytes | bytearray):
        return xmlrpc.client.Binary(bytes(value))
    if isinstance(value, Mapping):
        return {str(k): to_xmlrpc(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [to_xmlrpc(v) for v in value if v is not None]
    return str(value)


def build_call(
    method: str, event_id: str, event_type: str, result: Mapping[str, Any]
) -> bytes:
    """The ``<methodCall>`` document for one result, UTF-8 encoded."""
    params = (event_id, event_type, to_xmlrpc(result))
    text = xmlrpc.client.dumps(params, methodname=method, encoding="utf-8", allow_none=False)
    return text.encode("utf-8")


def _clip(text: str, limit: int = FAULT_TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_response(body: bytes) -> Any:
    """The value a ``<methodResponse>`` carries (its single param, as ServerProxy does).

    Raises :class:`CallbackError` for a ``<fault>`` (code and text, clipped), for a DTD
    or entities, and for anything that is not a well-formed XML-RPC response.
    """
    unmarshaller = xmlrpc.client.Unmarshaller(use_datetime=True)
    parser = DefusedExpatParser(
        unmarshaller, forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(body)
        parser.close()
        params = unmarshaller.close()
    except xmlrpc.client.Fault as fault:
        raise CallbackError(
            # The code is whatever the site sent (a 5,000-character string, a struct...).
            f"site answered XML-RPC fault {_clip(str(fault.faultCode), 40)}: "
            f"{_clip(str(fault.faultString))}"
        ) from fault
    except DefusedXmlException as exc:
        raise CallbackError("response contains a DTD or entities") from exc
    except ExpatError as exc:
        raise CallbackError(f"response is not well-formed XML ({exc.args[0]})") from exc
    except LookupError as exc:  # <?xml encoding="x-unknown"?>: expat asks Python's codecs
        raise CallbackError("response declares an encoding that does not exist") from exc
    except (xmlrpc.client.ResponseError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise CallbackError("response is not an XML-RPC methodResponse") from exc
    if len(params) == 1:
        return params[0]
    return params
