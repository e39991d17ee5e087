"""``python -m shardclient``: the same as the ``shardclient`` command."""

from shardclient._cli import main

raise SystemExit(main())
