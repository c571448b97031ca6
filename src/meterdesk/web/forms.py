"""Turning submitted form fields into the API's request models, with the API's own checks."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from meterdesk.shared.errors import ValidationError

Model = TypeVar("Model", bound=BaseModel)


def build(model: type[Model], **values: Any) -> Model:
    """``model`` from form values; a bad value is a :class:`ValidationError` naming the field."""
    try:
        return model.model_validate(values)
    except PydanticValidationError as error:
        parts = []
        for item in error.errors()[:5]:
            where = ".".join(str(part) for part in item.get("loc", ()))
            parts.append(
                f"{where}: {item.get('msg', 'invalid')}" if where else str(item.get("msg"))
            )
        raise ValidationError("; ".join(parts) or "invalid input") from None


def blank_to_none(value: str | None) -> str | None:
    return value.strip() if value and value.strip() else None
