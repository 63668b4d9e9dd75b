"""The bottom layer, imported by every other and importing none of them.

It owns the one error tree and the exit codes (`errors`), the one table of job options (`options`) and
the `Settings` generated from it (`settings`), HTTP with a retry policy, rate-limit gates and no redirects
(`http`), the event loop and the CLI's process set-up (`loop`), JSON log lines and the redaction of
secrets (`logs`), line splitting (`lines`), user-given headers (`headers`), the job lock (`joblock`), a
listen address (`address`) and the version (`version`).
"""
