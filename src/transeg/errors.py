"""The one exception type transeg raises for bad input; the CLI prints it as a single line."""


class TransegError(Exception):
    """A user-facing error: the message names the file, key or value at fault."""


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line; a TransegError re-raised by a DataLoader worker carries
    the worker's traceback, whose last line holds the original message."""
    message = str(exc).strip()
    if "Original Traceback" in message:
        message = message.splitlines()[-1].split("TransegError: ", 1)[-1]
    return " ".join(message.split())
