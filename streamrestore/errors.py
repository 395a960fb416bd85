"""The one exception type the CLI turns into a one-line message and a non-zero exit code."""


class UserError(Exception):
    """Bad input a user can fix: the message names the file or option and what to do."""
