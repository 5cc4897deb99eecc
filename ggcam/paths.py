"""Where the project's data lives, for a clone and for an installed package alike.

- Class names of the zoo's ImageNet models: package data (``ggcam/data``).
- Checkpoints of the zoo networks and the example model files: ``$GGCAM_HOME/checkpoints``
  when ``GGCAM_HOME`` is set; else the clone's ``checkpoints/`` when ggcam runs from a clone
  (an editable install or the source tree); else the user's data folder
  (``$XDG_DATA_HOME/ggcam`` or ``~/.local/share/ggcam`` on Linux, ``~/Library/Application
  Support/ggcam`` on macOS, ``%LOCALAPPDATA%\\ggcam`` on Windows), ``checkpoints/`` in it.
  ``--checkpoint`` names any other prefix.
- Built graphs: the user's cache folder (``ggcam.engine.cache``).

No TensorFlow here.
"""
import os
import sys

HOME_ENV = "GGCAM_HOME"
PACKAGE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(PACKAGE, "data")
# The clone this package sits in, if it does (the checkpoints folder's committed README marks it).
_CLONE = os.path.dirname(PACKAGE)
CLONE = _CLONE if os.path.isfile(os.path.join(_CLONE, "checkpoints", "README.md")) else None


def user_data() -> str:
    """The platform's per-user data folder for ggcam."""
    if sys.platform == "darwin":
        return os.path.join(os.path.expanduser("~"), "Library", "Application Support", "ggcam")
    if os.name == "nt":
        return os.path.join(os.environ.get("LOCALAPPDATA") or os.path.expanduser("~"), "ggcam")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "ggcam")


def checkpoint_dir() -> str:
    """The folder of the zoo's checkpoints and the example models (see the module docstring)."""
    home = os.environ.get(HOME_ENV)
    if home:
        return os.path.join(home, "checkpoints")
    if CLONE:
        return os.path.join(CLONE, "checkpoints")
    return os.path.join(user_data(), "checkpoints")
