"""The failover suite: real Sentinel, RabbitMQ and PostgreSQL topologies (lab/failover/).

It starts processes of its own and faults them, so it is a separate CI step,
``make test-failover``; ``make test`` leaves it out (tests/conftest.py).
"""
