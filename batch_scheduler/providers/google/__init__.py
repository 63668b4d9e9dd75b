"""Google's batch APIs: Gemini Developer API Batch Mode (gemini.py) and Vertex AI batch prediction
(vertex.py, its lines in vertex_lines.py), sharing the Message Batches -> Gemini conversion
(gemini_convert.py); Vertex stages its files in Cloud Storage (gcs.py) under Application Default
Credentials (gcp_auth.py)."""
