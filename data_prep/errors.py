"""Errors a user can cause: printed as one line by the CLIs, never as a stack trace."""


class PrepError(Exception):
    """Bad input or options for data preparation; the message names the file/line/field and the fix."""
