"""The simulated Google APIs: Gemini Batch Mode (gemini.py) and its Files API (gemini_files.py); Vertex
AI batch prediction (vertex.py) over a subset of Cloud Storage (gcs.py); and what Google Cloud's APIs
share (cloud.py: the OAuth token endpoint, the bearer-token check, error bodies, the gate)."""
