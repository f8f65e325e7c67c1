"""A run's configuration from the (master's) command-line options, on any process: local, master
or worker (the secrets are each process's own)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from harness import locust_env
from harness.credentials import EMULATOR_API_KEY, api_key_for, auth_token_for, header_values, is_loopback, same_target
from harness.health import Thresholds
from harness.network import proxy_for
from harness.payload import build_headers
from harness.platforms import effective_platform
from harness.recording import InfluxConfig
from harness.run import RunConfig
from harness.scenario import Scenario
from harness.transport import Target

if TYPE_CHECKING:
    from locust.env import Environment


def run_config(
    environment: Environment,
    scenario: Scenario,
    run_id: str,
    output_dir: Path,
    role: str,
    startup_host: str | None,
    influx_token: str | None,
    worker: str = "local",
) -> RunConfig:
    """A run's configuration from the (master's) command-line options, on any process; the
    secrets are this process's own."""
    options, host = locust_env.options(environment), environment.host
    assert host, "the emulator's or the --host given"
    emulator = options.host_is_emulator
    built_in = startup_host is None and is_loopback(host)  # the built-in emulator (or a loopback host the web UI chose): never proxied
    token = None if emulator else auth_token_for(host, startup_host)
    return RunConfig(
        scenario,
        Target(
            base_url=host,
            api_key=EMULATOR_API_KEY if emulator else api_key_for(host, startup_host, placeholder=token is None),
            headers={**build_headers(scenario), **header_values(scenario.headers, not emulator and same_target(host, startup_host))},
            proxy=None if emulator or built_in else proxy_for(host),
            auth_token=token,
            platform=effective_platform(scenario.platform, options),
        ),
        options.transport,
        output_dir,
        run_id,
        pool_size=max(options.num_users or 1, 100),
        worker=worker,
        role=role,
        points=options.points,
        influx=InfluxConfig.resolve(
            timeout_s=options.influx_timeout,
            url=options.influx_url,
            token=influx_token,
            org=options.influx_org,
            bucket=options.influx_bucket,
        ),
        points_buffer=options.influx_buffer,
        points_flush_timeout_s=options.points_flush_timeout,
        thresholds=Thresholds(options.max_cpu_percent, options.max_loop_lag_ms),
        max_requests=options.max_requests if role == "local" else None,
        min_free_disk_mb=options.min_free_disk_mb,
    )
