"""The `api:` block of the configuration: the agent's local HTTP API (docs/api.md).

On by default, bound to 127.0.0.1. Users (name, password, role `read` or `write`) are optional on
a loopback address and required on any other: an API reachable from the network without a login
is refused when the file is loaded, not discovered later.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from agent.config_base import Model as _Model
from agent.config_base import secret_is_text

MAX_USER = 60  # the usage log's sysUser limit: a user name is recorded with every login, read and logout


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (127.0.0.0/8, ::1, `localhost`)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class ApiUser(_Model):
    """One account of the local API; every session of it is recorded as usage (DO6001/DO6003/DO6002)."""

    name: str = Field(
        min_length=1, max_length=MAX_USER, pattern=r"^[^\s:]+$", description="no blanks or ':' (HTTP Basic)"
    )
    password: SecretStr = Field(description="a secret: ${NAME}, ${file:PATH} or ${credential:NAME}")
    role: Literal["read", "write"] = Field(default="read", description="write: also control writes")

    @model_validator(mode="before")
    @classmethod
    def _password_is_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("password") == "":
            raise ValueError("password is empty: give every API user a password")
        return secret_is_text(data, "password")


class ApiConfig(_Model):
    enabled: bool = Field(default=True, description="serve the local API")
    host: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8480, ge=1, le=65535)
    users: tuple[ApiUser, ...] = Field(default=(), description="required unless host is a loopback address")

    @model_validator(mode="after")
    def _users(self) -> ApiConfig:
        seen: set[str] = set()
        for u in self.users:
            if u.name in seen:
                raise ValueError(f"users: {u.name!r} is listed twice")
            seen.add(u.name)
        if self.enabled and not self.users and not is_loopback(self.host):
            raise ValueError(
                f"host {self.host!r} is not a loopback address and no users are configured: the API would serve the "
                "plant's data to anyone on the network without a login. Add users (name, password, role) or "
                "keep host: 127.0.0.1"
            )
        return self

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def user(self, name: str) -> ApiUser | None:
        return next((u for u in self.users if u.name == name), None)
