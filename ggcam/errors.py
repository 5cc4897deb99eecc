"""The library's exceptions, each a one-line message; the command lines map them to exit codes
(``ggcam.cli.run_cli``: an ``OptionsError`` is a usage error, status 2; the rest status 1).
``ModelError`` (``ggcam.models.base``) and ``ImageError`` (``ggcam.io.decoding``) are the others."""


class OptionsError(ValueError):
    """A request the library cannot do as asked: an option's value does not fit (a class rank
    past the model's classes, a check it does not have)."""
