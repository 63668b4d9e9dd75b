"""AWS Bedrock batch inference (bedrock.py): its record lines both ways (bedrock_lines.py), its output's
manifest and token counts (bedrock_output.py), and AWS access by botocore (access.py: credentials,
region, endpoints, SigV4)."""
