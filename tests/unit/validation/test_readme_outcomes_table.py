"""The README's table of bad-input kinds names only rules and refusals the code has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from include.preference.validation.rules import rule_catalogue

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]


def outcomes_table() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "| kind | outcome | rule / message |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip().startswith("|"):
            break
        rows.append(line)
    return rows


def test_every_rule_and_setting_the_table_names_exists():
    rows = outcomes_table()
    assert len(rows) >= 20
    rules = rule_catalogue()
    importers = "".join(p.read_text() for p in (ROOT / "include/preference/sources").glob("*.py"))
    settings = (ROOT / ".env.example").read_text()
    named = {token for row in rows for token in re.findall(r"`([A-Za-z_]+)`", row.split("|")[3])}
    assert named
    unknown = sorted(
        token
        for token in named
        if token not in rules
        and f"{token}:" not in importers  # refusals start their message with the rule's name
        and not (token.startswith("PREFERENCE_") and f"{token}=" in settings)
    )
    assert not unknown, f"the README's outcomes table names what the code does not have: {unknown}"


def test_every_row_rule_a_corrupted_line_can_break_is_in_the_table():
    table = "\n".join(outcomes_table())
    for rule in (
        "malformed_line",
        "duplicate_line",
        "conflicting_duplicate",
        "future_timestamp",
        "unparseable_timestamp",
        "bad_encoding",
        "invalid_id",
        "field_too_long",
        "implausible_value",
        "outside_logical_day",
        "duplicate_keys",
    ):
        assert f"`{rule}`" in table, rule
