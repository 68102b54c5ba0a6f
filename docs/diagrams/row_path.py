"""Draws docs/row-path.svg, the README's picture of the path of a row, from the description
below. Run `python docs/diagrams/row_path.py` after changing it; a test checks that the
checked-in picture is what this draws."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "row-path.svg"
WIDTH, HEIGHT = 1180, 340
INK, MUTED, LINE = "#1f2933", "#52606d", "#7b8794"
FILL = {"you": "#e3f2fd", "db": "#e8f5e9", "daemon": "#fff8e1", "passkit": "#f3e5f5"}


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    title: str
    lines: tuple[str, ...]
    kind: str

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def middle(self) -> int:
        return self.y + self.h // 2


BOXES = (
    Box(20, 70, 170, 170, "You", ("Softr, the console,", "the HTTP API, your app,", "psql"), "you"),
    Box(
        280,
        40,
        250,
        230,
        "Postgres (Supabase)",
        (
            "transactions · push_campaigns",
            "",
            "a trigger writes what is owed:",
            "loyaltyd.pass_syncs,",
            "loyaltyd.campaign_deliveries",
            "and rings NOTIFY",
            "",
            "progress · status · logs",
        ),
        "db",
    ),
    Box(
        620,
        40,
        250,
        230,
        "loyaltyd daemons",
        (
            "LISTEN: the doorbell",
            "claim with SKIP LOCKED,",
            "under a lease",
            "send at the account's rate,",
            "shared by every daemon",
            "retry; take over the dead",
            "daily sweeps, webhooks",
        ),
        "daemon",
    ),
    Box(950, 70, 90, 170, "PassKit", ("REST", "API"), "passkit"),
    Box(1070, 70, 95, 170, "Phones", ("Apple and", "Google", "Wallet"), "passkit"),
)


def arrow(x1: int, y1: int, x2: int, y2: int, label: str, *, above: bool = True) -> str:
    ty = min(y1, y2) - 8 if above else max(y1, y2) + 18
    return (
        f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="{LINE}" stroke-width="2" '
        f'marker-end="url(#head)"/>'
        f'<text x="{(x1 + x2) // 2}" y="{ty}" text-anchor="middle" font-size="13" '
        f'fill="{MUTED}">{escape(label)}</text>'
    )


def box(b: Box) -> str:
    parts = [
        f'<rect x="{b.x}" y="{b.y}" width="{b.w}" height="{b.h}" rx="10" '
        f'fill="{FILL[b.kind]}" stroke="{LINE}" stroke-width="1.5"/>',
        f'<text x="{b.x + b.w // 2}" y="{b.y + 26}" text-anchor="middle" font-size="16" '
        f'font-weight="bold" fill="{INK}">{escape(b.title)}</text>',
    ]
    for i, line in enumerate(b.lines):
        parts.append(
            f'<text x="{b.x + b.w // 2}" y="{b.y + 52 + 20 * i}" text-anchor="middle" '
            f'font-size="13" fill="{INK}">{escape(line)}</text>'
        )
    return "".join(parts)


def draw() -> str:
    you, db, daemon, passkit, phones = BOXES
    arrows = [
        arrow(you.right, you.middle - 20, db.x, you.middle - 20, "INSERT a row"),
        arrow(db.right, db.middle - 40, daemon.x, db.middle - 40, "NOTIFY"),
        arrow(daemon.x, db.middle + 40, db.right, db.middle + 40, "outcomes", above=False),
        arrow(daemon.right, passkit.middle - 30, passkit.x, passkit.middle - 30, "HTTPS"),
        arrow(
            passkit.x, passkit.middle + 30, daemon.right, passkit.middle + 30, "truth", above=False
        ),
        arrow(passkit.right, phones.middle, phones.x, phones.middle, ""),
    ]
    caption = (
        "A row goes in; loyaltyd claims what it owes PassKit, sends it at the account's "
        "rate, and writes back what happened."
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" '
        f'role="img" aria-label="The path of a row through loyaltyd">'
        f"<title>The path of a row through loyaltyd</title>"
        f'<defs><marker id="head" markerWidth="10" markerHeight="8" refX="9" refY="4" '
        f'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="{LINE}"/></marker></defs>'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>'
        + "".join(box(b) for b in BOXES)
        + "".join(arrows)
        + f'<text x="{WIDTH // 2}" y="{HEIGHT - 30}" text-anchor="middle" font-size="14" '
        f'fill="{MUTED}">{escape(caption)}</text>'
        "</svg>\n"
    )


def main() -> int:
    OUT.write_text(draw(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
