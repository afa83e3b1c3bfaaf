"""Measurements that print numbers: decode speed now; latency, quality and cost later."""
