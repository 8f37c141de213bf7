"""The error contract both command lines keep (`sr-degrade`, `promptsr`): a problem the user can fix is one
`error:` line on stderr and exit status 2, never a traceback; Ctrl-C is one line and status 130."""

from __future__ import annotations

import functools
from typing import NoReturn

import typer

from .errors import SrDegradeError, printable


def error_exit(message: str, code: int = 2) -> typer.Exit:
    """Print the `error:` line and return the Exit to raise. One line, whatever the message holds: names
    from files can carry newlines or escape sequences."""
    typer.echo(f"error: {printable(message)}", err=True)
    return typer.Exit(code)


def fail(message: str, code: int = 2) -> NoReturn:
    """The `error:` line, then exit (status 2 unless told)."""
    raise error_exit(message, code)


def friendly(fn):
    """Turn the errors a user can fix into one `error:` line and exit status 2, not a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SrDegradeError as e:
            raise error_exit(str(e)) from None
        except OSError as e:
            raise error_exit(f"{e.filename or ''}: {e.strerror or e}".lstrip(": ")) from None
        except KeyboardInterrupt:
            raise error_exit(
                "interrupted; complete work is kept (a build or a run continues with --resume)", 130
            ) from None

    return wrapper
