"""One way to persist a stage's settings: a dataclass saved as JSON next to every checkpoint and result."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Self

from semkit.errors import InputError


class JsonConfig:
    """Mixin for settings dataclasses: ``to_dict``, ``save``, ``from_dict`` and ``load``.

    Unknown keys are an error naming them: a typo in a batch spec or a hand-edited JSON must not be ignored.
    """

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def save(self, path: str | Path) -> Path:
        """Write the settings as JSON to ``path`` (a file) and return it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str))
        return path

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``TypeError`` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read settings written by :meth:`save`; a missing, malformed or foreign file raises
        :class:`~semkit.errors.InputError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{cls.__name__} file not found", path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise InputError(f"not a {cls.__name__} JSON: {err}", path) from None
