"""Message placeholders: `{first_name}`, `{points}`, `{program_name}`, with fallbacks.

`{first_name|friend}` renders "friend" when the member has no first name. Pure: campaigns and
the birthday bot validate a template once (an unknown placeholder rejects the whole message
before anything is sent) and render it per recipient.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

KNOWN_PLACEHOLDERS = frozenset({"first_name", "last_name", "points", "program_name"})
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TemplateError(ValueError):
    """The message cannot be rendered; the text says why, for an admin to read."""


@dataclass(frozen=True)
class Template:
    text: str
    placeholders: frozenset[str]

    def render(self, values: Mapping[str, object | None]) -> str:
        return _PLACEHOLDER.sub(lambda m: _substitute(m.group(1), values), self.text)


def _split(token: str) -> tuple[str, str]:
    name, _, fallback = token.partition("|")
    return name.strip(), fallback


def _substitute(token: str, values: Mapping[str, object | None]) -> str:
    name, fallback = _split(token)
    value = values.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return fallback
    return str(value)


def parse_template(text: str) -> Template:
    """Validate `text`; raise TemplateError naming every unknown or malformed placeholder."""
    names: set[str] = set()
    unknown: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        name, _ = _split(match.group(1))
        if name in KNOWN_PLACEHOLDERS:
            names.add(name)
        else:
            unknown.append("{" + match.group(1) + "}")
    if unknown:
        known = ", ".join("{" + n + "}" for n in sorted(KNOWN_PLACEHOLDERS))
        raise TemplateError(f"unknown placeholder {', '.join(unknown)}; known: {known}")
    stray = _PLACEHOLDER.sub("", text)
    if "{" in stray or "}" in stray:
        raise TemplateError("unbalanced { or } in the message; placeholders look like {first_name}")
    return Template(text, frozenset(names))
