"""What a call leaves behind: the audit event and its sinks (events), OpenTelemetry metrics (metrics), and
the streaming summary of an audit file (summary).
"""
