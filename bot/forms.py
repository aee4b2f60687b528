"""XEP-0004 data forms for the ad-hoc front door, generated from the argument schema.

Why generated: a command declares its arguments once (:class:`commands.model.Argument`);
the chat parser reads them, and so does this module to build the form an ad-hoc client
shows (a choice becomes a list-single, a required argument a required field, the help
its description). Results travel back as a ``result`` form whose ``text`` field holds
the same XEP-0393 text the chat front door sends, plus hidden ``ok``/``outcome``/``data``
fields the CLI reads. Raw ElementTree, like the rest of our XMPP code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any
from xml.etree import ElementTree as ET

from commands.model import Argument, Command
from commands.parse import usage

NS_DATA = "jabber:x:data"
FORM_TYPE = "urn:backchannel:command:0"
TRUE = frozenset({"1", "true"})


def _x(kind: str, title: str = "", instructions: str = "") -> ET.Element:
    form = ET.Element(f"{{{NS_DATA}}}x", {"type": kind})
    if title:
        ET.SubElement(form, f"{{{NS_DATA}}}title").text = title
    if instructions:
        ET.SubElement(form, f"{{{NS_DATA}}}instructions").text = instructions
    return form


def add_field(form: ET.Element, var: str, kind: str, *, label: str = "",
              values: Iterable[str] = (), desc: str = "", required: bool = False,
              options: Iterable[str] = ()) -> ET.Element:
    attrs = {"var": var, "type": kind}
    if label:
        attrs["label"] = label
    field = ET.SubElement(form, f"{{{NS_DATA}}}field", attrs)
    if desc:
        ET.SubElement(field, f"{{{NS_DATA}}}desc").text = desc
    if required:
        ET.SubElement(field, f"{{{NS_DATA}}}required")
    for value in values:
        ET.SubElement(field, f"{{{NS_DATA}}}value").text = value
    for option in options:
        opt = ET.SubElement(field, f"{{{NS_DATA}}}option", {"label": option})
        ET.SubElement(opt, f"{{{NS_DATA}}}value").text = option
    return field


def field_type(arg: Argument) -> str:
    return "list-single" if arg.kind == "choice" else "text-single"


def _default(arg: Argument) -> list[str]:
    if arg.default is None or isinstance(arg.default, bool):
        return []
    if arg.kind == "duration" and isinstance(arg.default, int | float):
        return [f"{arg.default:g}s"]
    return [str(arg.default)]


def command_form(command: Command) -> ET.Element:
    """The form asking for ``command``'s arguments."""
    form = _x("form", command.summary, f"Usage: {usage(command)}")
    add_field(form, "FORM_TYPE", "hidden", values=[FORM_TYPE])
    for arg in command.arguments:
        hint = {"int": "a whole number", "duration": "e.g. 30s, 5m, 1h",
                "time": "RFC 3339 time or a duration ago (1h, 30m)"}.get(arg.kind, "")
        desc = "; ".join(d for d in (arg.help, hint) if d)
        add_field(form, arg.name, field_type(arg), label=arg.name.replace("_", " "),
                  values=_default(arg), desc=desc, required=arg.required,
                  options=arg.choices)
    return form


def line_form() -> ET.Element:
    form = _x("form", "Run a command", "A command line, as you would type it in a chat.")
    add_field(form, "FORM_TYPE", "hidden", values=[FORM_TYPE])
    add_field(form, "line", "text-single", label="command", required=True,
              desc="e.g. status, events --last 5, help")
    return form


def confirm_form(question: str) -> ET.Element:
    form = _x("form", "Confirm", question)
    add_field(form, "FORM_TYPE", "hidden", values=[FORM_TYPE])
    add_field(form, "confirm", "boolean", label="Go ahead", values=["0"], required=True)
    return form


def result_form(title: str, text: str, *, ok: bool, outcome: str, data: Any) -> ET.Element:
    form = _x("result", title)
    add_field(form, "FORM_TYPE", "hidden", values=[FORM_TYPE])
    add_field(form, "text", "text-multi", label="Result", values=text.split("\n"))
    add_field(form, "ok", "boolean", values=["1" if ok else "0"])
    add_field(form, "outcome", "hidden", values=[outcome])
    add_field(form, "data", "hidden", values=[json.dumps(data, ensure_ascii=False)])
    return form


def submit_form(values: Mapping[str, str]) -> ET.Element:
    form = _x("submit")
    add_field(form, "FORM_TYPE", "hidden", values=[FORM_TYPE])
    for var, value in values.items():
        add_field(form, var, "text-single", values=[value])
    return form


def read_fields(parent: ET.Element | None) -> dict[str, list[str]]:
    """Field var -> values of the first data form directly under ``parent``."""
    if parent is None:
        return {}
    form = parent.find(f"{{{NS_DATA}}}x")
    if form is None or form.get("type", "form") not in ("submit", "result", "form"):
        return {}
    out: dict[str, list[str]] = {}
    for field in form.findall(f"{{{NS_DATA}}}field"):
        var = field.get("var")
        if var and var != "FORM_TYPE" and var not in out:
            out[var] = [v.text or "" for v in field.findall(f"{{{NS_DATA}}}value")]
    return out


def is_true(values: list[str] | None) -> bool:
    return bool(values) and values is not None and values[0].strip().lower() in TRUE


def instructions(form: ET.Element | None) -> str:
    if form is None:
        return ""
    found = form.find(f"{{{NS_DATA}}}instructions")
    return (found.text or "") if found is not None else ""
