"""The command line's exit codes and its one error type (shared by its commands)."""

from __future__ import annotations

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_NOT_FOUND = 127  # the shell's codes for a command that cannot be run
EXIT_NOT_EXECUTABLE = 126


class CliError(Exception):
    """A user-facing error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
