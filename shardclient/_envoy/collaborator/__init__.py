"""The collaborator children: ``python -m shardclient._envoy.collaborator.<generation>`` runs
OpenFL's collaborator for one experiment, in the unpacked workspace, and exits with its
outcome. ``interactive``: OpenFL 1.5-1.7. Only these modules import openfl."""
