"""Placeholders render per recipient, fall back when empty, and unknown ones are refused."""

from __future__ import annotations

import pytest

from daemon.core.templating import TemplateError, parse_template


@pytest.mark.parametrize(
    ("text", "values", "expected"),
    [
        ("Hi {first_name}!", {"first_name": "Ada"}, "Hi Ada!"),
        ("Hi {first_name|friend}!", {"first_name": None}, "Hi friend!"),
        ("Hi {first_name|friend}!", {"first_name": "  "}, "Hi friend!"),
        ("Hi {first_name|friend}!", {"first_name": "Bo"}, "Hi Bo!"),
        (
            "You have {points} points at {program_name}",
            {"points": 0, "program_name": "Joe's"},
            "You have 0 points at Joe's",
        ),
        ("{first_name}", {}, ""),
        ("No placeholders 🎂", {}, "No placeholders 🎂"),
        ("{ first_name | there }", {"first_name": None}, " there "),
    ],
)
def test_render(text: str, values: dict[str, object], expected: str) -> None:
    assert parse_template(text).render(values) == expected


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("Hi {firstname}", r"unknown placeholder \{firstname\}"),
        ("Hi {balance} and {x|y}", r"\{balance\}, \{x\|y\}"),
        ("Hi {}", r"unknown placeholder \{\}"),
        ("Hi {first_name", "unbalanced"),
        ("Hi first_name}", "unbalanced"),
    ],
)
def test_bad_templates_are_refused(text: str, match: str) -> None:
    with pytest.raises(TemplateError, match=match):
        parse_template(text)


def test_placeholders_are_listed() -> None:
    assert parse_template("{points} {first_name|x}").placeholders == {"points", "first_name"}
