"""Helpers shared by the tests, imported as ``support.<module>`` (``pythonpath`` in
pyproject.toml puts ``tests/`` on the path): Bayeux over httpx (``bayeux``), real-client drivers
(``drivers``) and the steps they share (``client_steps``), running uvicorn (``servers``),
faults injected on either stack (``faults``), the native protocols' harness without sockets
(``harness``), the standalone server as a process (``cli``), Redis servers and a Redis Cluster
(``redis_servers``) and a round-robin TCP proxy in front of several servers
(``round_robin``)."""
