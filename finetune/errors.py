"""Errors a user can cause while fine-tuning: printed as one line by the CLI, never as a stack trace."""


class FinetuneError(Exception):
    """Bad data file, options or model directory; the message names the file/line/field and the fix."""
