"""User errors: bad input or settings that a user fixes (named in the message), printed as one message.

`UserError` is the base of the errors our commands raise for such cases (`DatasetError`, `FixerSettingsError`).
Uncaught, they print their message alone, without a traceback (`DIFIX_NS_DEBUG=1` keeps the traceback):
`difix-ns` catches them itself; inside `ns-*` commands, whose `main` we do not own, `install_user_error_hook` makes
the interpreter's last-resort handler do the same.
"""

from __future__ import annotations

import os
import sys

__all__ = ["DEBUG_ENV", "UserError", "install_user_error_hook", "report_user_error"]

DEBUG_ENV = "DIFIX_NS_DEBUG"
"""Set to 1 to see the traceback of a user error."""


class UserError(ValueError):
    """Bad input or settings, explained by the message."""


def report_user_error(error: BaseException) -> None:
    """Print `error` as one message on stderr, with how to see its traceback."""
    print(f"\nError: {error}\n(set {DEBUG_ENV}=1 to see the traceback)", file=sys.stderr)


def install_user_error_hook() -> None:
    """Make an uncaught `UserError` print its message alone (unless DIFIX_NS_DEBUG is set); other exceptions go to
    the previous hook. Idempotent."""
    previous = sys.excepthook
    if getattr(previous, "_difix_user_error_hook", False):
        return

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, UserError) and not os.environ.get(DEBUG_ENV):
            report_user_error(exc)
            return
        previous(exc_type, exc, tb)

    hook._difix_user_error_hook = True  # type: ignore[attr-defined]
    sys.excepthook = hook
