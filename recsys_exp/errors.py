"""The errors every room raises; a leaf module (imports nothing of the package)."""


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the key and what is allowed."""
