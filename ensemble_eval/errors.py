"""The one base class of every problem a user can fix (bad flag, path, file, image, config).

Each module raises its own subclass with the offending value and what to do; the CLI
prints any of them as a single line and exits with status 2. Kept free of heavy imports so
the CLI can catch these without loading torch.
"""


class UserError(ValueError):
    """A problem the user can fix; its message names the problem and the fix."""
