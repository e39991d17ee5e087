"""The envoy application behind ``shardclient run``; built on the public client API only.

``envoy``: registration, health checks and the wait for experiments. ``experiment``: one
experiment's pipeline, in the order it runs: fetch (download), ``unpack``, ``review``,
``venv`` (the experiment's own environment), run (``process``: the collaborator or the data
owner's command in a process group of its own). ``state``: the experiments handled, kept
across restarts. ``collaborator/``: the child processes that run OpenFL's collaborator, one
per director generation; only they import openfl.
"""
