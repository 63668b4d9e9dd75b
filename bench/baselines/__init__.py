"""Baselines the scheduler is measured against: (b) `sdk_obvious`, (c) `article`. Each runs as its own process."""
