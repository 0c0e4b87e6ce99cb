"""The one exception type that the CLI turns into a one-line message and exit code 2, and the flattening of
library errors (Hydra, OmegaConf) into such a line."""

import re


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


_NOISE = ("object_type=", "Set the environment variable", "Config search path", "provider=", "reference_type=")


def one_line(error: BaseException) -> str:
    """Hydra and OmegaConf errors span lines and hide the cause in __cause__: flatten both."""
    parts = []
    while error is not None:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        lines = [line for line in lines if not line.startswith(_NOISE)]
        text = " ".join(lines).replace("full_key:", "key:")
        if text and text not in parts:
            parts.append(text)
        error = error.__cause__
    text = re.sub(r"\s+", " ", ": ".join(parts)).replace(":;", ":").strip()
    # our own resolvers' errors (a missing probe) already say what to do
    text = text.replace("FmtoolError raised while resolving interpolation: ", "")
    # a typed node has no room for new keys: Hydra's advice to append with '+' would only fail again
    return re.sub(r"To append to your config use \+\S+: (?=Key '[^']+' not in ')", "", text)
