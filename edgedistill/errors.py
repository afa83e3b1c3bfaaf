"""Errors that the CLI turns into exit codes without a traceback."""


class UserError(Exception):
    """Bad input from the user (recipe, flag, path): the CLI prints one line and exits 2.

    The message names the problem and the fix, e.g.
    ``recipe key 'distill.alpah' is unknown; did you mean 'distill.alpha'?``.
    """


class VerificationError(Exception):
    """An artifact failed its parity gate or integrity check: the CLI exits 1."""
