"""The two kinds of failure kubeloop tells apart.

A ``UserError`` is a mistake the user can fix (bad data, a bad flag or config
key, an unreachable endpoint, a request that breaks the schema): the CLI prints
its message without a traceback and exits 2. ``Conflict`` is a ``UserError``
meaning another writer got there first (an alias moved, an object changed): exit
3, nothing lost. Anything else is a bug in kubeloop and keeps its traceback and
cause chain (exit 1).
"""


class UserError(Exception):
    """A mistake the user can fix; the message says what and where."""

    exit_code = 2


class Conflict(UserError):
    """Another writer changed the object first; retry after looking at it."""

    exit_code = 3
