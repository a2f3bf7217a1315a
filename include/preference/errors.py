"""Every exception type of the package, in one import-light module.

DAG files name some of them in retry policies; resolving those at parse time imports only this.
"""


class PreferenceError(Exception):
    """Base class of this package's errors."""


class ConfigError(PreferenceError, ValueError):
    """A setting is missing or malformed; the message names the variable."""


class MissingLogicalDate(PreferenceError, ValueError):
    """A run without a data interval: the partition to write is unknown."""


class StorageError(PreferenceError, RuntimeError):
    """An S3 operation failed; the message says which and where."""


class StorageAuthError(StorageError):
    """S3 refused the credentials."""


class ObjectNotFound(StorageError):
    """The key does not exist."""


class PartitionNotFound(StorageError):
    """No manifest-complete partition exists at that place."""


class ValidationBlocked(PreferenceError):
    """A blocking validation rule failed; the message names the rules, counts and the report."""


class SourceFormatError(PreferenceError, ValueError):
    """An input file is not what its importer reads (not CSV, columns missing...)."""
