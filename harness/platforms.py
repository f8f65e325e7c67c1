"""Where Claude is served: the Anthropic API, or Google Cloud's Vertex AI (and, to come, Amazon
Bedrock). A scenario's `platform:` names it, with its region and project.

On Vertex AI a request goes to `{--host}/v1/projects/{project}/locations/{region}/publishers/
anthropic/models/{model}:streamRawPredict` (`:rawPredict` when blocking), its body without
`model` and with `anthropic_version: vertex-2023-10-16`, authenticated with a Google access
token: `GOOGLE_OAUTH_ACCESS_TOKEN` from the environment, else Application Default Credentials
(google-auth). Responses are the API's (the same SSE). The SDK's `AnthropicVertex` sends them
(the SDK transport); the fast transport speaks the Anthropic API only and refuses another platform.
Prices follow the model: a platform's model id (`claude-sonnet-4-5@20250929`) is priced as
the model it names.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import Field

from harness.fields import StrictModel

__all__ = ["ACCESS_TOKEN_ENV", "Platform", "base_model", "platform_problem"]

ACCESS_TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
_DATED = re.compile(r"^(?:(?:us|eu|apac|global)\.)?(?:anthropic\.)?(claude-[a-z0-9-]+?)(?:[@-]\d{8})?(?:-v\d+:\d+)?$")


class Platform(StrictModel):
    """Where the requests go: `anthropic` (the API, the default) or `vertex` (Google Cloud)."""

    name: Literal["anthropic", "vertex"] = "anthropic"
    region: str | None = Field(default=None, min_length=1)  # vertex: the location (us-east5, europe-west1, global)
    project: str | None = Field(default=None, min_length=1)  # vertex: the Google Cloud project id

    @property
    def is_api(self) -> bool:
        return self.name == "anthropic"


def platform_problem(platform: Platform, transport: str) -> str | None:
    """Why a run on `platform` cannot start with `transport`, in one line (a usage error)."""
    if platform.is_api:
        return None
    if platform.region is None or platform.project is None:
        return f"platform {platform.name}: needs region and project (platform: {{name: {platform.name}, region: ..., project: ...}})"
    if transport != "sdk":
        return f"platform {platform.name}: the fast transport speaks the Anthropic API only; use --transport sdk"
    return None


def access_token() -> str | None:
    """A Google access token from the environment (None: the SDK asks google-auth's Application Default Credentials)."""
    return os.environ.get(ACCESS_TOKEN_ENV) or None


def base_model(model: str) -> str:
    """The model a platform's model id names (`claude-sonnet-4-5@20250929` -> `claude-sonnet-4-5`)."""
    match = _DATED.match(model)
    return match.group(1) if match else model
