"""User-facing errors: one line, naming the file or field and the reason."""


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
