"""The records of each export, validated by pydantic: a record of the wrong shape is reported as one
line naming the file, the record and the key at fault, instead of failing deep in a reader."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from transeg.data.annotations.common import Problems
from transeg.errors import TransegError

Side = Annotated[int, Field(ge=1, le=65535)]  # an image side in pixels, as a 16-bit label map holds
Byte = Annotated[int, Field(ge=0, le=255)]
Count = Annotated[int, Field(ge=0)]
Ident = int | str

Model = TypeVar("Model", bound=BaseModel)


def _reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "the record"
    return f"{where}: {first['msg'].lower()} (got {str(first.get('input'))[:40]!r})"


def parse(model: type[Model], data: Any, source: Path, ident: str, problems: Problems) -> Model | None:
    """``data`` as ``model``, or None after reporting what is wrong with it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems.report(source, ident, _reason(exc))
        return None


def parse_file(model: type[Model], data: Any, source: Path) -> Model:
    """``data`` as ``model``; a file of the wrong shape is a TransegError naming it and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise TransegError(f"{source}: not a {model.__doc__} ({_reason(exc)})") from None


# --------------------------------------------------------------------------- COCO
class CocoImage(BaseModel):
    id: Ident
    file_name: str
    height: Side | None = None
    width: Side | None = None


class CocoCategory(BaseModel):
    id: int
    name: str


class CocoFile(BaseModel):
    """COCO annotations file"""

    images: list[CocoImage]
    categories: list[CocoCategory]
    annotations: list[Any] = []


class CocoRle(BaseModel):
    size: tuple[Side, Side]
    counts: str | list[Count]


class CocoAnnotation(BaseModel):
    id: Ident | None = None
    image_id: Ident
    category_id: int
    segmentation: list[list[float]] | CocoRle


# --------------------------------------------------------------------------- LabelMe
class LabelMeShape(BaseModel):
    label: str
    points: list[tuple[float, float]]
    shape_type: str | None = "polygon"


class LabelMeFile(BaseModel):
    """LabelMe file"""

    shapes: list[Any]
    imagePath: str
    imageData: str | None = None
    imageHeight: Side | None = None
    imageWidth: Side | None = None


# --------------------------------------------------------------------------- Label Studio
class StudioResult(BaseModel):
    id: Ident | None = None
    type: str
    original_width: Side
    original_height: Side
    value: dict[str, Any]


class StudioBrush(BaseModel):
    rle: list[Byte]
    brushlabels: list[str] = Field(min_length=1)


class StudioPolygon(BaseModel):
    points: list[tuple[float, float]]
    polygonlabels: list[str] = Field(min_length=1)


class StudioTask(BaseModel):
    """Label Studio task"""

    data: dict[str, Any]
    annotations: list[dict[str, Any]] = []
    completions: list[dict[str, Any]] = []
    predictions: list[dict[str, Any]] = []
