"""The only code in shardclient that touches grpclib's, h2's and hyperframe's private attributes.

Two fast paths for downloads, each guarded and each with grpclib's plain path as its tested
fallback, their benefit measured by bench/throughput.py:

- :mod:`.channel`: connections whose h2 frame buffer gives DATA frames a constant-cost repr
  and copies them once (h2 formats ``repr(frame)`` for a trace log on every frame, and
  hyperframe hexlifies the whole payload: a third of a download's CPU), and that offer a
  1 MiB SETTINGS_MAX_FRAME_SIZE. Nothing global is patched.
- :mod:`.reader`: archive chunks decoded straight off grpclib's stream buffer, the length
  checked before the body is buffered, the bytes copied once or not at all.

:mod:`.guards` holds the switches and checks the structure each path relies on where it first
meets it; on a mismatch the path falls back with one warning. :mod:`.preface` judges a peer's
first bytes (an HTTP/2 server, or not a gRPC director: HTTP/1, TLS, anything else), which a
tuned connection does at once. :mod:`.server` is the test directors' grpclib server, which can
drop its connections as a process exit would. :mod:`.diagnosis` reads what a
tuned connection noted (whether the peer spoke, how the connection ended) to say why a call
failed; on another layout it finds nothing.
"""
