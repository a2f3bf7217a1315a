"""Helpers shared by tests: build real inputs (never fakes of the code under test)."""
