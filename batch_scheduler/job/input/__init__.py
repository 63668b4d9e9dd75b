"""The input stage: from the user's files to the bodies of batches.

It owns reading huge inputs in big blocks (`reader`), rows plus a prompt template and their params
(`sources`, `template`: field names only, `params`), checking every line before it may join a batch (`validate`: bad lines go to
rejected.jsonl with their file and line), cutting checked lines into chunks that fit one batch
(`batcher`), and reading a chunk's requests again for a retry (`replay`). Nothing here talks to a
provider or writes the ledger.
"""
