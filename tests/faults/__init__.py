"""Fault-injection tests: real worker processes, a private Redis, real SMTP sinks, and things going wrong."""
