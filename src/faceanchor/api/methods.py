"""``GET /v1/methods``: every method the registry knows, what it runs on and which fields it takes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["system"])


class MethodOut(BaseModel):
    name: str
    app: str
    label: str
    description: str
    families: list[str]
    default_family: str
    embedding_space: str
    normalised_embedding: bool
    fields: list[str]
    method_fields: list[str]
    max_references: int
    renders: bool
    models: list[str]


class MethodsOut(BaseModel):
    methods: list[MethodOut]
    apps: dict[str, list[str]]


@router.get("/v1/methods", response_model=MethodsOut, summary="The methods this server offers (no key needed)")
def list_methods() -> dict[str, Any]:
    from faceanchor.methods.registry import apps, methods

    return {"methods": [m.describe() for m in methods()], "apps": {k: list(v) for k, v in apps().items()}}
