"""Exceptions raised for bad input. Each message names the offending file, line or value."""


class OodrecError(Exception):
    """Base class of every error the CLI reports without a traceback."""


class DataValidationError(OodrecError):
    """An input data file is malformed, missing, empty or fails its checksum."""


class ConfigError(OodrecError):
    """A configuration value or key is invalid."""


class RunError(OodrecError):
    """A run directory is missing, incomplete or inconsistent."""
