"""The documentation says what the code does: every setting is documented, the env example
names only real settings, every link points at a file that exists, and the README's picture
is what its source draws."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

from daemon.core.config import Settings
from tests.conftest import REPO

DOCS = sorted((REPO / "docs").glob("*.md"))
ENV_EXAMPLE = REPO / "systemd" / "loyaltyd.env.example"
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _env_name(field: str) -> str:
    return field.upper()


def test_every_setting_is_in_the_configuration_page() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [f for f in Settings.model_fields if f"`{_env_name(f)}`" not in page]
    assert missing == []


def test_the_env_example_names_only_real_settings() -> None:
    named = re.findall(r"^#?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.MULTILINE)
    assert named
    known = {_env_name(f) for f in Settings.model_fields}
    assert sorted(set(named) - known) == []


def test_every_relative_link_points_at_a_file() -> None:
    broken = []
    for page in [REPO / "README.md", REPO / "ARCHITECTURE.md", *DOCS]:
        for target in _LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_the_pictures_source_draws_the_checked_in_picture() -> None:
    source = REPO / "docs" / "diagrams" / "row_path.py"
    spec = importlib.util.spec_from_file_location("row_path", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["row_path"] = module  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["row_path"]
    drawn: str = module.draw()
    assert drawn == Path(module.OUT).read_text(), "run `make diagrams`"
