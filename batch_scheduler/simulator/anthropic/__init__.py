"""The simulated Messages APIs: Anthropic Message Batches and count_tokens (api.py), and the article's
inline proxy (inline.py)."""
