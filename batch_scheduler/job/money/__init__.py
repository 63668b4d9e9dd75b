"""The money stage: what requests cost and what a job may spend.

It owns the price table and pricing of usage per model and long-context tier (`pricing`), token
estimates before anything is sent (`estimate`), and the `--max-cost` cap that holds new batches back
once spend plus the estimate of batches in flight would pass it (`budget`).
"""
