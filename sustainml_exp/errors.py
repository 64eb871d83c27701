"""Exceptions whose message is shown to the user as one line, without a traceback."""


class UserError(Exception):
    """Bad input the user can fix; the message names what is wrong and what is allowed."""


class ConfigError(UserError):
    """A config key, type or value that is not allowed."""


class DataMissingError(UserError):
    """A dataset that is not on disk: says what is missing, where it was looked for and how to get it."""


class StorageError(UserError):
    """A results folder that cannot be written: names the folder and the operating system's reason."""
