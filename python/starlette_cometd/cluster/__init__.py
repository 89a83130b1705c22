"""Several processes as one server, sharing a Redis (see ``docs/cluster.md``)."""
