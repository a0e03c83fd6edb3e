"""Errors a user can cause and fix: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a config, an argument). The message names what is wrong and where."""

    exit_code = 2
