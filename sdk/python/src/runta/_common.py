"""Pieces shared by the sync and async public classes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Dict, Generic, List, Optional, TypeVar

from ._flows import SessionState
from ._models import CheckpointInfo, RuntimeInfo

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


class CheckpointBase:
    """State every checkpoint handle holds: its record (checkpoints never change)."""

    def __init__(self, info: CheckpointInfo) -> None:
        self._info = info

    @property
    def info(self) -> CheckpointInfo:
        """The whole record, as returned by the daemon."""
        return self._info

    @property
    def id(self) -> str:
        """The checkpoint's UUID."""
        return self._info.id

    @property
    def name(self) -> str:
        return self._info.name

    @property
    def tenant(self) -> str:
        return self._info.tenant

    @property
    def source_runtime_id(self) -> str:
        """The runtime it was taken from (which may since have been deleted)."""
        return self._info.source_runtime_id

    @property
    def source_runtime_name(self) -> str:
        return self._info.source_runtime_name

    @property
    def image(self) -> str:
        return self._info.image

    @property
    def size_bytes(self) -> int:
        """Bytes of its own layer (forks share it; they do not copy it)."""
        return self._info.size_bytes

    @property
    def created_at(self) -> Optional[datetime]:
        return self._info.created_at

    @property
    def display_name(self) -> str:
        """The official client's name of :attr:`name`."""
        return self._info.name

    @property
    def state(self) -> str:
        """``ready``: a checkpoint exists only once its files are saved."""
        return str(self._info.raw.get("state", "ready"))

    @property
    def kind(self) -> str:
        """``full`` (the only kind)."""
        return str(self._info.raw.get("kind", "full"))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.id!r}, name={self.name!r}, "
            f"source_runtime_name={self.source_runtime_name!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CheckpointBase) and other.id == self.id

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
