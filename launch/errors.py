"""Errors a user can cause (missing tools, bad hostfile, no GPUs): one line from the CLI, no stack trace."""


class LaunchError(Exception):
    """The message names the thing that is wrong and the fix."""
