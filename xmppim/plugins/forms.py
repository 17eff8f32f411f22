"""XEP-0004 data forms: build the forms commands show, read the forms users submit.

Added in 0.1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, SubElement

NS = "jabber:x:data"
X = f"{{{NS}}}x"


@dataclass
class Field:
    var: str
    type: str = "text-single"
    label: str = ""
    value: str | list[str] = ""
    required: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    """(label, value) pairs for list-single / list-multi."""
    desc: str = ""


@dataclass
class Form:
    title: str = ""
    instructions: str = ""
    fields: list[Field] = field(default_factory=list)
    type: str = "form"
    """'form' asks the user to fill it; 'result' shows data; 'submit'/'cancel' come from the user."""

    def to_element(self) -> Element:
        x = Element(X, {"type": self.type})
        if self.title:
            SubElement(x, f"{{{NS}}}title").text = self.title
        if self.instructions:
            SubElement(x, f"{{{NS}}}instructions").text = self.instructions
        for f in self.fields:
            fe = SubElement(x, f"{{{NS}}}field", {"var": f.var, "type": f.type})
            if f.label:
                fe.set("label", f.label)
            if f.desc:
                SubElement(fe, f"{{{NS}}}desc").text = f.desc
            if f.required:
                SubElement(fe, f"{{{NS}}}required")
            values = f.value if isinstance(f.value, list) else ([f.value] if f.value != "" else [])
            for v in values:
                SubElement(fe, f"{{{NS}}}value").text = v
            for label, v in f.options:
                o = SubElement(fe, f"{{{NS}}}option", {"label": label})
                SubElement(o, f"{{{NS}}}value").text = v
        return x


def parse_submission(x: Element | None) -> dict[str, list[str]]:
    """Values of a submitted form by field var (each a list: XEP-0004 fields may repeat values)."""
    if x is None:
        return {}
    out: dict[str, list[str]] = {}
    for f in x.findall(f"{{{NS}}}field"):
        var = f.get("var")
        if not var:
            continue
        out[var] = [v.text or "" for v in f.findall(f"{{{NS}}}value")]
    return out


def first(values: dict[str, list[str]], var: str, default: str = "") -> str:
    v = values.get(var)
    return v[0] if v else default
