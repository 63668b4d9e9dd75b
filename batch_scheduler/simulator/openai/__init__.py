"""The simulated OpenAI-style APIs: OpenAI Batch (api.py), its files (files.py) and the answer bodies of
each endpoint (bodies.py); the providers served on them (azure.py, groq.py, together.py, mistral.py);
and xAI's own REST API (xai.py)."""
