"""User-facing errors: one line, naming the thing at fault.

The CLI prints ``error: <message>`` for these and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ClipAdapterError(Exception):
    """A problem with the user's input (file, option, data), not a bug."""

    exit_code = 2


class DataError(ClipAdapterError):
    """A dataset, split file or image that cannot be used."""


class ConfigError(ClipAdapterError):
    """An option or configuration value that is invalid."""


class ArtifactError(ClipAdapterError):
    """An artifact or checkpoint that is missing, malformed or mismatched."""


class TrainingError(ClipAdapterError):
    """Training could not continue (for example a non-finite loss)."""


class OutputError(ClipAdapterError):
    """An output path that cannot or must not be written (it holds someone else's files, …)."""


class SystemRefusal(OutputError):
    """The operating system refused to write or read (disk full, file too large, no permission, read-only).

    Exit status 3 wherever it happens, so a script can tell "fix your input" (2)
    from "fix the machine" (3).
    """

    exit_code = 3
