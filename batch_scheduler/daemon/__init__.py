"""The spool daemon: jobs dropped into a directory, run forever on one machine.

It owns the process's lifecycle (`server`: startup -> main loop -> shutdown, signals, the spool lock), a
job's life in the spool (`jobs`: prepare, run, settle by `job.outcome`, key checks; `spool`: the inbox,
claims of dropped files, options files under the one trust rule), fair shares of the batch slots
(`slots`), the HTTP API and its access rules (`api`), the status page (`page`, `html`, `chart`),
Prometheus metrics (`metrics`), systemd notifications (`notify`), `--on-done` and signed webhooks
(`hooks`), and its flags (`arguments`). It never imports `cluster/`.
"""
