"""Validation of landed data with Great Expectations suites written as code, with quarantine."""

from include.preference.validation.engine import BlockingFailure, DayValidation, TableOutcome, validate_day
from include.preference.validation.rules import TrailingStats, rule_catalogue

__all__ = ["BlockingFailure", "DayValidation", "TableOutcome", "TrailingStats", "rule_catalogue", "validate_day"]
