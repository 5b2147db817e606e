"""The error type gsr raises for bad input: the CLI prints it as one line."""


class GsrError(Exception):
    """A user-facing error. Its message names the file, key or path at fault."""


class NonFiniteLossError(GsrError):
    """Training met too many non-finite losses in a row and stopped."""
