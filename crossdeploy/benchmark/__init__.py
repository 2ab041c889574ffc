"""Latency and throughput of every variant: a closed-loop batch x concurrency sweep and MLPerf LoadGen scenarios."""
