"""The command line, the outermost layer: the parser, `main`, and one module per command.

Nothing in the package imports from here; `main` is the only place that changes the process
(logging, umask, event loop and garbage-collector set-up).
"""
