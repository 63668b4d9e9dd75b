"""Anthropic's Messages API family: Message Batches (provider.py, the default provider) with what each
`anthropic-version` accepts (versions.py), and the article's inline proxy, which speaks the same request
and result forms (inline.py)."""
