"""The one exception type users see: a one-line message naming what and where."""


class TomocareError(Exception):
    """A user-facing error: the CLI prints ``error: <message>`` and exits with code 2."""
