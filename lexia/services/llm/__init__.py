"""The LLM API: chat and text completions on the LLM engine, aggregated or streamed."""
