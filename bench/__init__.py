"""`make bench` / `python -m bench`: the scheduler against the floor and two baselines, on one simulator.

    harness     starts the simulator, runs every program on every size, writes the report
    inputs      generates (once) and caches N article-summary requests under bench/work/
    measure     runs one program as a subprocess: wall, CPU seconds, peak RSS
    floor       (a) read + parse + write one answer line per request to shards, no network
    baselines/  (b) the official SDK the obvious way, (c) the article's approach
    metrics     what the runs left behind: per-batch delays, poll calls, exactly-once check
    profile     `python -m bench profile`: the scheduler's CPU by function (cProfile table, pyinstrument flame graph)
    report      markdown table, targets, JSON and PNG chart under bench/results/
"""
