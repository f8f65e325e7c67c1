"""User stages (a closed loop's `load.stages` with `users`) as Locust's own LoadTestShape: each
stage ramps linearly from the users before it (the section's `users`, else 0) to its own over
its duration, then the test ends. Locust starts and stops users at a stage's spawn rate, so a
ramp of n users over d seconds runs at n/d users per second; a stage that holds keeps its users.
"""

from __future__ import annotations

from collections.abc import Sequence

from locust import LoadTestShape

from harness.load import Load


class StagesShape(LoadTestShape):
    """The users over time of a scenario's stages, for the web UI and headless runs alike."""

    def __init__(self, start_users: int, stages: Sequence[tuple[float, int]]) -> None:
        super().__init__()
        self.legs: list[tuple[float, int, float]] = []  # (end in s since the start, users, spawn rate)
        end_s, users = 0.0, start_users
        for duration_s, to_users in stages:
            end_s += duration_s
            spawn_rate = abs(to_users - users) / duration_s if to_users != users else float(max(to_users, 1))
            self.legs.append((end_s, to_users, spawn_rate))
            users = to_users

    def tick(self) -> tuple[int, float] | None:
        elapsed_s = self.get_run_time()
        for end_s, users, spawn_rate in self.legs:
            if elapsed_s < end_s:
                return users, spawn_rate
        return None  # the last stage is over: the test ends

    @property
    def most_users(self) -> int:
        return max(users for _, users, _ in self.legs)


def stages_shape(load: Load | None) -> StagesShape | None:
    """A closed loop's user stages as a shape; None without them."""
    if load is None or load.open_loop or not load.stages:
        return None
    return StagesShape(load.users or 0, [(stage.duration_s, stage.users or 0) for stage in load.stages])
