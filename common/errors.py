"""One exception for every bad input a user can give: the scripts print its message on one line
and exit with status 2."""


class UserError(Exception):
    pass


def one_line(e):
    """An exception's message on one line (for the `error: ...` line a script prints)."""
    return " ".join(str(e).split())
