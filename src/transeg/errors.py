"""The one exception type transeg raises for bad input; the CLI prints it as a single line."""


class TransegError(Exception):
    """A user-facing error: the message names the file, key or value at fault."""
