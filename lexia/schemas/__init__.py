"""Wire types: OpenAI mirrors (openai.py) and Lexia's own objects (lexia.py)."""
