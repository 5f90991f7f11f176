"""Errors the CLI reports as one line with exit status 2 (no traceback)."""


class UserError(ValueError):
    """Bad input from the user: a suite file, a path, an option. The message names it and says what was expected."""
