"""Transform steps as written in definitions: `transform: name` + `args:`, or a list of steps."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clinicsync.integrations.transforms import TRANSFORMS


class TransformStep(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in TRANSFORMS:
            raise ValueError(f"unknown transform {value!r}; known: {', '.join(sorted(TRANSFORMS))}")
        return value


def normalise_transform(value: Any, args: Any) -> list[TransformStep]:
    """Accept `transform: name` + `args:`, or `transform: [{name, args}, ...]`."""
    if value is None:
        return []
    if isinstance(value, str):
        return [TransformStep(name=value, args=args or {})]
    if isinstance(value, list):
        return [
            TransformStep(name=item) if isinstance(item, str) else TransformStep(**item) for item in value
        ]
    if isinstance(value, dict):
        return [TransformStep(**value)]
    raise ValueError("transform must be a name, a {name, args} mapping or a list of them")


def fold_transform(data: Any) -> Any:
    """A mapping's `transform` (+ `args`) in the one list-of-steps form."""
    if isinstance(data, dict) and ("transform" in data or "args" in data):
        data = dict(data)
        args = data.pop("args", None)
        data["transform"] = normalise_transform(data.get("transform"), args)
    return data
