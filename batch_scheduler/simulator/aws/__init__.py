"""The simulated AWS Bedrock batch inference (bedrock.py): model invocation jobs over the simulator's S3."""
