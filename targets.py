"""Transitional: the old integer-code helpers over ggcam.targets (removed by the package move)."""
from typing import Union

from ggcam.targets import Target, caption as _caption

TOP1 = -1


def _target(code: Union[int, str]) -> Target:
    if isinstance(code, str):
        return Target.from_key(code)
    return Target.of(code) if code >= 0 else Target.best(-code)


def key(code: int) -> str:
    return _target(code).key


def caption(target: Union[int, str], name: str) -> str:
    return _caption(_target(target), name)
