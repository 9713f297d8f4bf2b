"""GET /v1/models and /v1/models/{id} (API.md §3.1): any valid key."""

from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.openapi.datastructures import ResponseSpec

from lexia.api.deps import current_services
from lexia.api.errors import documented
from lexia.api.security import ANY_KEY, secured
from lexia.engines.base import Engines, ModelInfo
from lexia.errors import ModelNotFound
from lexia.schemas.system import Model, ModelList


def model_view(info: ModelInfo) -> Model:
    """The OpenAI model object with Lexia's extensions (`context_length` for LLMs only)."""
    model = Model(id=info.id, created=info.created, kind=info.kind, status=info.status, aliases=list(info.aliases))
    if info.kind == "llm":
        model.context_length = info.context_length
    return model


MODELS_OK = ResponseSpec(ModelList, generate_examples=False, description="Every served model")
_cache: tuple[list[ModelInfo] | None, bytes] = (None, b"")  # the last list seen, encoded


def _models_body(models: list[ModelInfo]) -> bytes:
    # ModelInfo is frozen and engines keep theirs, so an equal list (compared by identity
    # first, in C) means the same bytes.
    global _cache  # noqa: PLW0603
    if models != _cache[0]:
        _cache = (models, msgspec.json.encode(ModelList(data=[model_view(m) for m in models])))
    return _cache[1]


class ModelController(Controller):
    """/v1/models."""

    path = "/v1/models"
    opt = secured(ANY_KEY)

    # The hot path of the gateway benchmark: no parameters (so no per-request signature parsing
    # and no DI) and the encoded list cached; documented as the ModelList it is.
    @get("/", media_type="application/json", responses={200: MODELS_OK, **documented()})
    async def list_models(self) -> bytes:
        """Every served model: the LLM, the STT model and the diarization pipeline."""
        return _models_body(current_services().engines.models())

    @get("/{model_id:path}", responses=documented(404))
    async def get_model(self, model_id: str, engines: Engines) -> Model:
        """One model by id or alias (404 model_not_found)."""
        name = model_id.lstrip("/")
        info = engines.find_model(name)
        if info is None:
            raise ModelNotFound(name, param=None)
        return model_view(info)
