"""Wire types: request bodies and response objects, one module per resource (OpenAI mirrors: openai, audio)."""
