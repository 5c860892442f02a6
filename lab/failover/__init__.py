"""The failover lab: real topologies on loopback ports, a schedule of faults, and a checker.

``make failover-lab`` starts each topology with nothing but Debian's packages
and the project's own code, drives sign-ups and telemetry through the whole
system (web, workers, beat) while faults run, then compares what was committed
with what was done and prints one line per run.

- ``sentinel``: a Redis primary, two replicas and three Sentinels.
- ``rabbitmq``: a RabbitMQ node of the lab's own, with quorum queues.
- ``postgres``: a PostgreSQL cluster of the lab's own (initdb in a temporary directory).

The tests under tests/failover share this code (``make test-failover``).
"""
