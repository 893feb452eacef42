"""One call as the runtime carries it: the call and its admission (call), a human's question and answer
(approval), and the I/O a pipeline step asks for (ops). Depends only on the policy core.
"""
