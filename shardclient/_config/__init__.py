"""Envoy config files, read within bounds and checked, naming the file and the key at fault.

``interactive``: OpenFL 1.5-1.7's envoy_config.yaml (a shard descriptor). ``checks`` reads
a file and its typed values, ``template`` imports what a config names as ``fx`` does, and
``bounded_yaml`` parses untrusted YAML (configs, and the plans inside experiment archives).
"""
