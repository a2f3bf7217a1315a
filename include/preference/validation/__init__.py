"""Validation of landed data with Great Expectations suites written as code, with quarantine."""

from include.preference.validation.engine import (
    BlockingFailure,
    DayValidation,
    HistoryValidation,
    TableOutcome,
    validate_day,
    validate_days,
)
from include.preference.validation.rules import Plausibility, TrailingStats, rule_catalogue

__all__ = [
    "BlockingFailure",
    "DayValidation",
    "HistoryValidation",
    "Plausibility",
    "TableOutcome",
    "TrailingStats",
    "rule_catalogue",
    "validate_day",
    "validate_days",
]
