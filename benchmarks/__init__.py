"""Benchmarks of the load generator and the emulator (`make bench`), kept beside the
package as Locust keeps its own: they are not installed with it."""
