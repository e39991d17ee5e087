"""The director clients, bottom-up.

Shared by both director generations: ``options`` (validated keyword options), ``retry``,
``tls``, ``wire`` (checks of messages in and out), ``chunks`` and ``download`` (reading and
saving an archive), ``translate`` (every exception mapping, in one order), ``probe`` (one short
look at what a peer speaks, for a TLS mismatch), ``transport`` (the connection and the call
patterns), ``loop`` and ``sync`` (the loop thread and the facade
base), and ``http2/``, the only code touching grpclib's, h2's and hyperframe's internals.

Per generation, one RPC module and one sync facade: ``interactive_aio`` / ``interactive_sync``
for OpenFL 1.5-1.7's director, ``workflow_aio`` / ``workflow_sync`` for OpenFL 1.9's
Workflow-API director.
"""
