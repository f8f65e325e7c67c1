"""The packaged locustfile, alone in its folder (Locust puts the folder on sys.path while it loads it)."""
