"""Pieces of benches/run.py: the servers, starting processes pinned to cores, the machine."""
