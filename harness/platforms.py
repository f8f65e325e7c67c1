"""Where Claude is served: the Anthropic API, Google Cloud's Vertex AI or Amazon Bedrock. A
scenario's `platform:` names it, with its region (and Vertex AI's project).

On Vertex AI a request goes to `{--host}/v1/projects/{project}/locations/{region}/publishers/
anthropic/models/{model}:streamRawPredict` (`:rawPredict` when blocking), its body without
`model` and with `anthropic_version: vertex-2023-10-16`, authenticated with a Google access
token: `GOOGLE_OAUTH_ACCESS_TOKEN` from the environment, else Application Default Credentials
(google-auth). Responses are the API's (the same SSE).

On Bedrock a request goes to `{--host}/model/{model}/invoke-with-response-stream` (`/invoke`
when blocking), its body without `model` and with `anthropic_version: bedrock-2023-05-31`,
signed with AWS SigV4 from boto3's credentials (environment, profile, role). A stream comes AWS
event-stream framed, each message a `chunk` holding one API event; the transport reads the
frames as they arrive (harness/bedrock_frames.py, with botocore's decoder) and times the
events in them as it times SSE.

The SDK's `AnthropicVertex` and `AnthropicBedrock` send them (the SDK transport); the fast
transport speaks the Anthropic API only and refuses another platform.
Prices follow the model: a platform's model id (`claude-sonnet-4-5@20250929`) is priced as
the model it names.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from typing import Any, Literal

from pydantic import Field

from harness.fields import StrictModel

__all__ = ["ACCESS_TOKEN_ENV", "PLATFORMS", "Platform", "base_model", "effective_platform", "platform_problem"]

ACCESS_TOKEN_ENV = "GOOGLE_OAUTH_ACCESS_TOKEN"
_DATED = re.compile(r"^(?:(?:us|eu|apac|global)\.)?(?:anthropic\.)?(claude-[a-z0-9-]+?)(?:[@-]\d{8})?(?:-v\d+:\d+)?$")


class Platform(StrictModel):
    """Where the requests go: `anthropic` (the API, the default) or `vertex` (Google Cloud)."""

    name: Literal["anthropic", "vertex", "bedrock"] = "anthropic"
    region: str | None = Field(default=None, min_length=1)  # vertex: the location (us-east5, global); bedrock: the AWS region
    project: str | None = Field(default=None, min_length=1)  # vertex: the Google Cloud project id

    @property
    def is_api(self) -> bool:
        return self.name == "anthropic"


PLATFORMS = ("anthropic", "vertex", "bedrock")


def effective_platform(scenario_platform: Platform, options: Any) -> Platform:
    """The scenario's platform, with what the command line gives (--platform, --platform-region, --platform-project) over it."""
    given = {"name": options.platform, "region": options.platform_region, "project": options.platform_project}
    return scenario_platform.model_copy(update={key: value for key, value in given.items() if value is not None})


def platform_problem(platform: Platform, transport: str) -> str | None:
    """Why a run on `platform` cannot start with `transport`, in one line (a usage error)."""
    if platform.is_api:
        return None
    if platform.name == "vertex" and (platform.region is None or platform.project is None):
        return "platform vertex: needs region and project (platform: {name: vertex, region: ..., project: ...})"
    if platform.name == "bedrock" and platform.region is None:
        return "platform bedrock: needs region (platform: {name: bedrock, region: us-east-1})"
    if platform.name == "bedrock" and importlib.util.find_spec("boto3") is None:
        return "platform bedrock: needs boto3 for AWS credentials and signing (pip install boto3)"
    if transport != "sdk":
        return f"platform {platform.name}: the fast transport speaks the Anthropic API only; use --transport sdk"
    return None


def access_token() -> str | None:
    """A Google access token from the environment (None: the SDK asks google-auth's Application Default Credentials)."""
    return os.environ.get(ACCESS_TOKEN_ENV) or None


@functools.lru_cache(maxsize=256)  # priced on every request: a model id repeats
def base_model(model: str) -> str:
    """The model a platform's model id names (`claude-sonnet-4-5@20250929` -> `claude-sonnet-4-5`)."""
    match = _DATED.match(model)
    return match.group(1) if match else model
