"""The ``mcp-guard`` command: main (the parser and SUBCOMMANDS), common (exit codes, one-line failures), one
module per subcommand or group (validate/explain/schema in main, init, pin, proxy, inbox, living: test, usage,
audit), and their helpers (policytest, caseerrors, session_lint).
"""
