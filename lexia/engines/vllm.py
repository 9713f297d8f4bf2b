"""VLLMEngine: vLLM's AsyncLLM (v1) in this process behind the LLMEngine Protocol.

vllm, torch and transformers are imported inside functions only, so importing this module (or
the app with fake engines) stays light. The engine core runs in a child process started with
multiprocessing spawn; the chat template is applied here with the model's tokenizer through
vLLM's renderer. Every request streams DELTA outputs (FINAL_ONLY when the caller aggregates),
and closing or cancelling a stream aborts the request in the engine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from lexia.engines.base import EngineLoadError, LLMChunk, LLMRequest, ModelInfo, completion_budget
from lexia.engines.models import require
from lexia.engines.toolcalls import required_tools_schema
from lexia.engines.vllm_output import ChoiceDecoder, ParserAdapter, with_counts
from lexia.errors import ContextLengthExceeded, EngineUnavailable, ValidationFailed
from lexia.settings import LLMSettings

log = logging.getLogger("lexia.engines.vllm")

# vLLM's validation parameters that mean "the prompt does not fit the context".
_CONTEXT_PARAMS = frozenset({"input_tokens", "input_text", "max_total_tokens", "max_tokens", "max_output_tokens"})


def served_name(settings: LLMSettings) -> str:
    """LEXIA_LLM_SERVED_NAME, else the last path part of LEXIA_LLM_MODEL."""
    return settings.served_name or settings.model.rstrip("/").rsplit("/", 1)[-1]


def chat_template(value: str) -> str | None:
    """LEXIA_LLM_CHAT_TEMPLATE: a file path or the Jinja template itself (empty: the model's)."""
    if not value:
        return None
    path = Path(value)
    if len(value) < 4096 and "{" not in value and path.is_file():
        return path.read_text(encoding="utf-8")
    return value


def engine_args(settings: LLMSettings, model_path: str | None = None) -> Any:
    """vLLM AsyncEngineArgs from the LEXIA_LLM_* settings (the weights from `model_path` when given)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    return AsyncEngineArgs(
        model=model_path or settings.model,
        served_model_name=[served_name(settings)],
        dtype=settings.dtype,
        max_model_len=settings.max_model_len or None,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        quantization=settings.quantization or None,
        tensor_parallel_size=settings.tensor_parallel_size,
        enforce_eager=settings.enforce_eager,
        max_num_seqs=settings.max_num_seqs or None,
        disable_log_stats=True,
    )


def _build(settings: LLMSettings) -> VLLMEngine:
    from vllm.v1.engine.async_llm import AsyncLLM

    tool_parser = None
    if settings.tool_parser:
        from vllm.tool_parsers import ToolParserManager

        try:
            tool_parser = ToolParserManager.get_tool_parser(settings.tool_parser)
        except KeyError:
            names = ", ".join(sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers}))
            raise EngineLoadError(
                f"LEXIA_LLM_TOOL_PARSER={settings.tool_parser!r} is not a vLLM tool parser; known: {names}"
            ) from None
    template = chat_template(settings.chat_template)
    path = require("llm", settings.model)  # never a silent download
    started = time.monotonic()
    llm = AsyncLLM.from_engine_args(engine_args(settings, str(path)))
    log.info("vLLM engine for %s ready in %.1f s", settings.model, time.monotonic() - started)
    return VLLMEngine(
        llm,
        served_name(settings),
        aliases=settings.aliases,
        chat_template=template,
        tool_parser=tool_parser,
    )


async def load(settings: LLMSettings) -> VLLMEngine:
    """Start vLLM for LEXIA_LLM_MODEL (the engine core is a spawned child process)."""
    if not settings.model:
        raise EngineLoadError("LEXIA_LLM_MODEL is required when the LLM is enabled with real engines")
    # Building takes tens of seconds (weights, engine-core process, warm-up) and needs no event
    # loop (AsyncLLM starts its output handler on the first request), so it runs in a thread.
    return await asyncio.to_thread(_build, settings)


class VLLMEngine:
    """An LLMEngine over vLLM's AsyncLLM."""

    def __init__(
        self,
        llm: Any,
        model_id: str,
        *,
        aliases: Sequence[str] = (),
        chat_template: str | None = None,
        tool_parser: Any = None,
    ) -> None:
        self._llm = llm
        self.model_ids: Sequence[str] = (model_id, *aliases)
        self._model_id = model_id
        self.context_length = int(llm.model_config.max_model_len)
        self._info = ModelInfo(
            id=model_id,
            kind="llm",
            created=int(time.time()),
            aliases=tuple(aliases),
            context_length=self.context_length,
        )
        self._chat_template = chat_template
        self._tool_parser = tool_parser
        self._defaults: dict[str, Any] = dict(llm.model_config.get_diff_sampling_param())
        self._active: set[str] = set()

    def info(self) -> ModelInfo:
        """The served model."""
        return self._info

    def in_flight(self) -> int:
        """Requests vLLM holds (an n > 1 request counts each of its sequences)."""
        return int(self._llm.get_num_unfinished_requests())

    async def check(self) -> None:
        """Raise EngineUnavailable if the engine core died."""
        if self._llm.errored:
            raise EngineUnavailable("The LLM engine has stopped; restart the server")
        try:
            await self._llm.check_health()
        except Exception as exc:
            raise EngineUnavailable("The LLM engine has stopped; restart the server") from exc

    async def aclose(self) -> None:
        """Abort what runs and stop the engine core process."""
        with contextlib.suppress(Exception):
            if self._active:
                await self._llm.abort(list(self._active))
        # Stop the output handler first: it would otherwise see the core exit and log it as a crash.
        handler = getattr(self._llm, "output_handler", None)
        if handler is not None:
            handler.cancel()
            await asyncio.gather(handler, return_exceptions=True)
        await asyncio.to_thread(self._llm.shutdown)

    # -- one request -----------------------------------------------------------------------

    async def _render(self, request: LLMRequest) -> tuple[Any, int]:
        from vllm.exceptions import VLLMValidationError
        from vllm.renderers.params import ChatParams
        from vllm.utils.mistral import is_mistral_tokenizer

        renderer = self._llm.renderer
        try:
            if request.messages is not None:
                params = ChatParams(
                    chat_template=self._chat_template,
                    chat_template_kwargs={
                        "add_generation_prompt": True,
                        "continue_final_message": False,
                        "tools": list(request.tools) if request.tools else None,
                        "tokenize": is_mistral_tokenizer(renderer.tokenizer),
                    },
                )
                _, inputs = await renderer.render_chat_async(
                    [list(request.messages)], params, renderer.default_chat_tok_params
                )
            else:
                inputs = await renderer.render_cmpl_async(
                    [{"prompt": request.prompt or ""}], renderer.default_cmpl_tok_params
                )
        except VLLMValidationError as exc:
            raise self._client_error(request, exc) from None
        except (ValueError, TypeError, KeyError) as exc:
            # Chat-template errors (e.g. roles the template refuses) are the request's fault.
            raise ValidationFailed(f"The messages cannot be rendered: {exc}", param="messages") from None
        engine_input = inputs[0]
        return engine_input, len(engine_input["prompt_token_ids"])

    def _client_error(self, request: LLMRequest, exc: Any) -> ValidationFailed | ContextLengthExceeded:
        where = "messages" if request.messages is not None else "prompt"
        message = str(exc.args[0]) if exc.args else str(exc)
        if exc.parameter in _CONTEXT_PARAMS or "context length" in message:
            return ContextLengthExceeded(message, param=where)
        return ValidationFailed(message, param=exc.parameter or where)

    def _max_tokens(self, request: LLMRequest, prompt_tokens: int) -> int:
        return completion_budget(request, prompt_tokens, self.context_length)

    def _tool_mode(self, request: LLMRequest) -> tuple[str, Any, bool]:
        """("none"|"auto"|"required"|"named", structured outputs, skip special tokens)."""
        from vllm.sampling_params import StructuredOutputsParams

        tools = list(request.tools or ())
        choice = request.tool_choice
        if not tools or choice == "none":
            return "none", _response_format_outputs(request.response_format), True
        if choice == "required":
            schema = required_tools_schema(tools, request.parallel_tool_calls)
            return "required", StructuredOutputsParams(json=schema), True
        if choice == "auto":
            if self._tool_parser is None:
                raise ValidationFailed("tool_choice 'auto' needs LEXIA_LLM_TOOL_PARSER", param="tool_choice")
            return "auto", _response_format_outputs(request.response_format), False
        function = next(t["function"] for t in tools if t["function"]["name"] == choice)
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        return "named", StructuredOutputsParams(json=parameters), True

    def _sampling_params(self, request: LLMRequest, max_tokens: int, outputs: Any, skip_special: bool) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        def pick(name: str, value: float | int | None, fallback: float | int) -> Any:
            return value if value is not None else self._defaults.get(name, fallback)

        return SamplingParams(
            n=request.n,
            temperature=pick("temperature", request.temperature, 1.0),
            top_p=pick("top_p", request.top_p, 1.0),
            top_k=pick("top_k", request.top_k, 0),
            min_p=pick("min_p", request.min_p, 0.0),
            presence_penalty=pick("presence_penalty", request.presence_penalty, 0.0),
            frequency_penalty=pick("frequency_penalty", request.frequency_penalty, 0.0),
            repetition_penalty=pick("repetition_penalty", request.repetition_penalty, 1.0),
            seed=request.seed,
            stop=list(request.stop) or None,
            max_tokens=max_tokens,
            min_tokens=request.min_tokens or 0,
            logprobs=request.logprobs,
            logit_bias=request.logit_bias,
            structured_outputs=outputs,
            skip_special_tokens=skip_special,
            output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY,
        )

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMChunk]:
        """Acceptance chunk, then the choices' deltas as vLLM produces them."""
        from vllm.exceptions import VLLMValidationError
        from vllm.v1.engine.exceptions import EngineDeadError

        engine_input, prompt_tokens = await self._render(request)
        max_tokens = self._max_tokens(request, prompt_tokens)
        mode, outputs, skip_special = self._tool_mode(request)
        try:
            params = self._sampling_params(request, max_tokens, outputs, skip_special)
            queue = await self._llm.add_request(request.request_id, engine_input, params)
        except VLLMValidationError as exc:
            raise self._client_error(request, exc) from None
        except EngineDeadError as exc:
            raise EngineUnavailable("The LLM engine has stopped; restart the server") from exc
        except ValueError as exc:  # e.g. a JSON schema the structured-output backend refuses
            raise ValidationFailed(str(exc), param="response_format" if mode == "none" else "tools") from None
        self._active.add(request.request_id)
        finished = False
        try:
            yield LLMChunk(0, prompt_tokens=prompt_tokens)
            choices = [self.decoder(request, mode) for _ in range(request.n)]
            completion = 0
            while not finished:
                try:
                    out = queue.get_nowait() or await queue.get()
                except EngineDeadError as exc:
                    raise EngineUnavailable("The LLM engine stopped while generating") from exc
                finished = bool(out.finished)
                for output in out.outputs:
                    completion += len(output.token_ids)
                    for chunk in choices[output.index].feed(output):
                        yield with_counts(chunk, prompt_tokens, completion)
        finally:
            self._active.discard(request.request_id)
            if not finished:
                await self._llm.abort(request.request_id)
            queue.close()

    def decoder(self, request: LLMRequest, mode: str | None = None) -> ChoiceDecoder:
        """The output decoder of one choice of `request` (tool-call parsing included)."""
        if mode is None:
            mode = self._tool_mode(request)[0]
        parser = None
        if mode == "auto":
            parser = ParserAdapter(self._tool_parser, self._llm.renderer.tokenizer, request, self._model_id)
        name = request.tool_choice if mode == "named" else None
        return ChoiceDecoder(request, mode, parser, name)


def _response_format_outputs(response_format: dict[str, Any] | None) -> Any:
    if not response_format:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    if response_format["type"] == "json_object":
        return StructuredOutputsParams(json_object=True)
    return StructuredOutputsParams(json=response_format["schema"])
