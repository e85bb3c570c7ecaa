"""User-facing errors: one line, naming the file or field and the reason."""
import re


class CamserError(Exception):
    """A mistake in the user's input (file, config, argument). The CLI prints it as one line."""


class AudioError(CamserError):
    """An audio file that can't be used: ``AudioError(path, reason)`` → ``"path: reason"``."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ConfigError(CamserError):
    """A configuration field with a bad value: names the field."""


def first_line(e: BaseException, limit: int = 300, with_type: bool = False) -> str:
    """What an exception says, as one line for a user-facing message: its first meaningful line
    (terminal colours and traceback lines dropped), at most ``limit`` characters; its type's name
    when it says nothing. ``with_type``: prefixed with the type's name (for errors not of camser's
    own making, where the type tells what failed)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    line = next((t.strip() for t in text.splitlines()
                 if t.strip() and not t.strip().startswith(("Traceback", "File "))), "")
    if with_type:
        line = f"{type(e).__name__}: {line}".rstrip(": ")
    return (line or type(e).__name__)[:limit]

