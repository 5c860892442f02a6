"""Test-only subscribers that fail on purpose, installed in worker subprocesses by EVENTDEMO_FAULT_APPS=1.

They consume their own event type (``faults.probe``), so installing the app
never adds a subscriber to ``user.signed_up``: the sign-up fan-out is the
same with or without it. Tests send a probe straight to one subscriber's task.
"""
