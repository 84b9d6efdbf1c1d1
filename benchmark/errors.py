"""Errors a user can act on.

`UserError` is bad input or configuration: the CLI prints its one-line message and exits
with code 2, without a traceback. Anything else that escapes is an internal error (exit 1).
"""


class UserError(Exception):
    """Bad input or configuration; the message names the file and the offending part."""

    exit_code = 2

