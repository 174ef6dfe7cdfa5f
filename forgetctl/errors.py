"""Error types. Every error a user can cause is a ForgetctlError with a one-line message;
the CLI prints it and exits non-zero."""


class ForgetctlError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 1


class InputError(ForgetctlError):
    """Malformed or empty input data, bad names, bad options."""

    exit_code = 2


class NotFoundError(ForgetctlError):
    """Unknown version, alias, composition, workspace or file."""

    exit_code = 3


class IntegrityError(ForgetctlError):
    """Stored bytes or the audit chain no longer match their hashes."""

    exit_code = 4


class IncompatibleError(ForgetctlError):
    """Adapter trained against another base, or shapes that do not fit."""

    exit_code = 5


class AuthError(ForgetctlError):
    """Missing or rejected credentials (e.g. a Hub token), or no permission for the operation."""

    exit_code = 6
