"""Errors a user can cause and fix: the CLI prints them as one line and exits with their ``exit_code``."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a config, an argument). The message names what is wrong and where."""

    exit_code = 2


class DiskWriteError(UserError):
    """A file could not be written (a full disk, a quota, a read-only mount); the message names the folder."""


class NonFiniteLossError(UserError):
    """A NaN or infinite training loss: the run stops before the bad step updates anything.

    The message names the global step and epoch; checkpoints written before it are kept as they
    are (none is written from the bad state). Exit code 3, so scripts can tell divergence apart
    from bad input.
    """

    exit_code = 3
