"""``python -m shardclient``: the same as the ``shardclient`` command."""

from shardclient.cli import main

raise SystemExit(main())
