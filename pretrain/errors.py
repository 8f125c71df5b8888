"""Errors a user can cause in pretraining: the CLIs print them as one line, never as a stack trace.

Every user error of this package derives from ``PretrainError`` (config, checkpoint, preflight, metrics
file, rendezvous); a dataset that breaks the shard contract raises data_prep's ``PrepError`` family
(``ShardError``). Anything else, ``FileNotFoundError`` from our own code included, is a bug and keeps
its traceback.
"""


class PretrainError(Exception):
    """Bad input, config, data or environment for a pretraining run; the message names the thing and the fix."""
