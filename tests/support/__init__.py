"""What the tests share and are not tests themselves: helpers that start real processes (Locust
runs, clusters, the web UI, a metrics server), the servers and children they start, and test data."""
