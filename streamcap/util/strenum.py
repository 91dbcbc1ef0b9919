"""`StrEnum` on every Python streamcap runs on: 3.11 has it; JetPack 6's Python 3.10 does not."""
from __future__ import annotations

try:
    from enum import StrEnum
except ImportError:  # Python 3.10
    from enum import Enum

    class StrEnum(str, Enum):  # type: ignore[no-redef]
        """Members are strings and print as their value, as 3.11's StrEnum does."""

        def __str__(self) -> str:
            return str(self.value)

        def __format__(self, spec: str) -> str:
            return format(str(self.value), spec)

__all__ = ["StrEnum"]
