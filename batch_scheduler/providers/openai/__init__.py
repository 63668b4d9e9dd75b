"""The OpenAI-style family: OpenAI Batch (provider.py) and its request and result lines (lines.py); the
providers that follow its files + batches flow, described as data (profile.py) and built from it (like.py:
Azure OpenAI, Groq, Together; mistral.py), the paging of their lists (listing.py); and xAI (xai.py: its own
REST API, OpenAI's lines)."""
