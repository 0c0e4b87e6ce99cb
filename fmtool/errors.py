"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class FmtoolError(Exception):
    """A problem with the user's input (config, data file, run directory) rather than a bug.

    The message is a single line that names the file, line or config key at fault.
    """

    exit_code = 2


class TrainingStopped(FmtoolError):
    """Training could not go on: a non-finite loss, or a stop signal (exit code 128 + the signal's number)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
