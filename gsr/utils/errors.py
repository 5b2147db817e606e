"""The error type gsr raises for bad input: the CLI prints it as one line."""


class GsrError(Exception):
    """A user-facing error. Its message names the file, key or path at fault."""


class NonFiniteLossError(GsrError):
    """Training met too many non-finite losses in a row and stopped."""


def check_at_least(name: str, value, minimum, exclusive: bool = False) -> None:
    """One error naming ``name`` unless ``value`` >= ``minimum`` (> with ``exclusive``): the range checks of
    command-line values and config numbers, made before any work."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < minimum or (exclusive and
                                                                                             value == minimum):
        raise GsrError(f'{name} must be {"greater than" if exclusive else "at least"} {minimum}, got {value!r}')
