"""vLLM outputs to LLMChunks: logprobs, tool-call parsing (vLLM parsers or guided JSON), counts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lexia.engines.base import LLMChunk, LLMRequest, TokenLogprob, ToolCallDelta
from lexia.engines.toolcalls import ToolArrayStream, new_call_id


def with_counts(chunk: LLMChunk, prompt_tokens: int, completion_tokens: int) -> LLMChunk:
    """The chunk with the request's cumulative counts."""
    return LLMChunk(
        chunk.index,
        chunk.text,
        chunk.tool_calls,
        chunk.logprobs,
        chunk.finish_reason,
        prompt_tokens,
        completion_tokens,
    )


def _logprobs(output: Any, top: int | None) -> tuple[TokenLogprob, ...]:
    if top is None or not output.logprobs:
        return ()
    entries = []
    for token_id, position in zip(output.token_ids, output.logprobs, strict=False):
        chosen = position.get(token_id)
        if chosen is None:
            continue
        token = chosen.decoded_token or ""
        best = sorted(position.values(), key=lambda lp: lp.rank if lp.rank is not None else 1 << 30)[:top]
        entries.append(
            TokenLogprob(
                token,
                float(chosen.logprob),
                list(token.encode("utf-8", "replace")),
                tuple((lp.decoded_token or "", float(lp.logprob)) for lp in best),
            )
        )
    return tuple(entries)


class ParserAdapter:
    """One choice's view of a vLLM tool parser: text deltas in, content and call deltas out."""

    def __init__(self, parser_cls: Any, tokenizer: Any, request: LLMRequest, model: str) -> None:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        self._request = ChatCompletionRequest.model_validate(
            {
                "model": model,
                "messages": list(request.messages or ()),
                "tools": list(request.tools or ()),
                "tool_choice": "auto",
                "parallel_tool_calls": request.parallel_tool_calls,
            }
        )
        self._parser = parser_cls(tokenizer, self._request.tools)
        self._request = self._parser.adjust_request(self._request)
        self._streaming = request.stream
        self._text = ""
        self._token_ids: list[int] = []
        self._ids: dict[int, str] = {}
        self.called = False

    def feed(self, delta_text: str, delta_ids: Sequence[int]) -> tuple[str, list[ToolCallDelta]]:
        """Content to show and call deltas found in this piece (streaming mode)."""
        previous_text, previous_ids = self._text, list(self._token_ids)
        self._text += delta_text
        self._token_ids.extend(delta_ids)
        if not self._streaming:
            return "", []
        message = self._parser.extract_tool_calls_streaming(
            previous_text, self._text, delta_text, previous_ids, self._token_ids, list(delta_ids), self._request
        )
        if message is None:
            return "", []
        return message.content or "", [self._delta(call) for call in message.tool_calls]

    def _delta(self, call: Any) -> ToolCallDelta:
        self.called = True
        name = call.function.name if call.function is not None else None
        arguments = (call.function.arguments if call.function is not None else None) or ""
        call_id = call.id
        if name is not None and call.index not in self._ids:
            self._ids[call.index] = call_id or new_call_id()
            call_id = self._ids[call.index]
        return ToolCallDelta(call.index, id=call_id if name is not None else None, name=name, arguments=arguments)

    def finish(self) -> tuple[str, list[ToolCallDelta]]:
        """At the end: the whole-text parse (aggregated mode) or the unstreamed argument tail."""
        if not self._streaming:
            info = self._parser.extract_tool_calls(self._text, self._request)
            if not info.tools_called:
                return self._text, []
            self.called = True
            calls = [
                ToolCallDelta(i, id=c.id or new_call_id(), name=c.function.name, arguments=c.function.arguments)
                for i, c in enumerate(info.tool_calls)
            ]
            return info.content or "", calls
        remaining = self._parser.get_remaining_unstreamed_args() if self.called else ""
        if remaining:
            return "", [ToolCallDelta(len(self._parser.prev_tool_call_arr) - 1, arguments=remaining)]
        return "", []


class ChoiceDecoder:
    """Turns one choice's vLLM CompletionOutputs into LLMChunks for the request's tool mode."""

    def __init__(self, request: LLMRequest, mode: str, parser: ParserAdapter | None, name: str | None) -> None:
        self._request = request
        self._mode = mode
        self._parser = parser
        self._name = name
        self._array = ToolArrayStream() if mode == "required" else None
        self._named_sent = False

    def feed(self, output: Any) -> list[LLMChunk]:
        """Chunks for one CompletionOutput delta."""
        index = output.index
        logprobs = _logprobs(output, self._request.logprobs)
        text, calls = self._split(output.text, output.token_ids)
        chunks = []
        if text or calls or logprobs:
            chunks.append(LLMChunk(index, text, tuple(calls), logprobs if not calls else ()))
        if output.finish_reason is not None:
            tail_text, tail_calls = self._parser.finish() if self._parser is not None else ("", [])
            if tail_text or tail_calls:
                chunks.append(LLMChunk(index, tail_text, tuple(tail_calls)))
            chunks.append(LLMChunk(index, finish_reason=self._finish_reason(output.finish_reason)))
        return chunks

    def _split(self, text: str, token_ids: Sequence[int]) -> tuple[str, list[ToolCallDelta]]:
        if self._mode == "auto" and self._parser is not None:
            return self._parser.feed(text, token_ids)
        if self._mode == "required" and self._array is not None:
            return "", self._array.feed(text)
        if self._mode == "named" and self._name is not None:
            if not self._named_sent:
                self._named_sent = True
                return "", [ToolCallDelta(0, id=new_call_id(), name=self._name, arguments=text)]
            return "", [ToolCallDelta(0, arguments=text)] if text else []
        return text, []

    def _finish_reason(self, reason: str) -> str:
        called = (
            (self._parser is not None and self._parser.called)
            or (self._array is not None and self._array.calls > 0)
            or self._named_sent
        )
        return "tool_calls" if called and reason == "stop" else reason
