"""Pieces shared by the sync and async public classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Generic, List, Optional, TypeVar

from ._flows import SessionState
from ._models import RuntimeInfo

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list: ``items`` and the cursor of the next page (``None`` on the
    last one; pass it as ``after=``)."""

    items: List[T]
    next_cursor: Optional[str]

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


class RuntimeBase:
    """State every runtime handle holds: the id and the last record seen."""

    def __init__(self, info: RuntimeInfo) -> None:
        self._info = info

    @property
    def id(self) -> str:
        """The runtime's UUID."""
        return self._info.id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def cached_info(self) -> RuntimeInfo:
        """The record as of the last call that returned it; ``refresh()`` updates it."""
        return self._info

    @property
    def status(self) -> str:
        """Shortcut for ``cached_info.status`` (not refreshed)."""
        return self._info.status

    def _set(self, info: RuntimeInfo) -> RuntimeInfo:
        self._info = info
        return info

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuntimeBase) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class SessionBase:
    def __init__(self, runtime_id: str, state: SessionState) -> None:
        self._runtime_id = runtime_id
        self._state = state

    @property
    def cwd(self) -> Optional[str]:
        """Working directory of the next command (``None``: the runtime's default)."""
        return self._state.cwd

    @cwd.setter
    def cwd(self, value: Optional[str]) -> None:
        self._state.cwd = value

    @property
    def env(self) -> Dict[str, str]:
        """Variables sent with every command (updated by ``export``/``unset``); edit freely."""
        return self._state.env
