"""Exceptions shared by every layer; the CLI maps them to exit codes."""


class MmctrError(Exception):
    """Base class for errors caused by the user's input (exit code 2)."""


class ConfigError(MmctrError):
    """A config file or a ``--set`` override is invalid."""


class DataError(MmctrError):
    """A data file is missing or does not follow the expected layout."""


class CheckpointError(MmctrError):
    """A run directory or checkpoint cannot be used as asked."""


class StorageError(MmctrError):
    """A file could not be written for want of space or permission; what was there is intact."""


class RunLockedError(CheckpointError):
    """Another live process is writing the run folder."""


class TrackingError(MmctrError):
    """A tracking store (``--track``) cannot be reached or used."""
