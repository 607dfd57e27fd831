"""How a trigger (and the shared helpers it uses) reaches AWS: one value for the four connection arguments.

``aws_conn_id``, ``region_name``, ``verify`` and ``botocore_config`` are the arguments the Amazon provider's
hooks take. :class:`AwsConnectionArgs` holds them as one hashable value: it builds the hook, gives the
trigger kwargs they serialise to (the same four flat kwargs as ever, so persisted triggers keep loading),
and is the connection part of the key under which triggers share a poller or a queue receiver.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

H = TypeVar("H")


@dataclass(frozen=True)
class AwsConnectionArgs:
    """The connection arguments of a trigger; equal values share pollers and receivers.

    ``botocore_config`` is kept as canonical JSON (``config_json``) so that the value is hashable and two
    equal dicts make equal keys; an empty config is no config.
    """

    aws_conn_id: str | None = "aws_default"
    region_name: str | None = None
    verify: bool | str | None = None
    config_json: str | None = None

    @classmethod
    def of(
        cls,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: Mapping[str, Any] | None = None,
    ) -> AwsConnectionArgs:
        """Build from the keyword arguments as triggers and hooks spell them."""
        if botocore_config is not None and not isinstance(botocore_config, Mapping):
            raise TypeError(
                f"botocore_config must be a dict of botocore Config options, not {botocore_config!r}"
            )
        config_json = json.dumps(dict(botocore_config), sort_keys=True) if botocore_config else None
        return cls(aws_conn_id, region_name, verify, config_json)

    @property
    def botocore_config(self) -> dict[str, Any] | None:
        """A fresh copy of the botocore config dict (None when there is none)."""
        return None if self.config_json is None else json.loads(self.config_json)

    def to_kwargs(self) -> dict[str, Any]:
        """The trigger kwargs these arguments serialise to (what :meth:`of` takes back)."""
        return {
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
        }

    def hook(self, hook_class: Callable[..., H], **extra: Any) -> H:
        """An instance of ``hook_class`` (an ``AwsBaseHook``) on this connection; ``extra`` goes to it too."""
        return hook_class(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
            **extra,
        )


class WithAwsConnection:
    """The four connection arguments of an object holding an :class:`AwsConnectionArgs` as ``aws``."""

    aws: AwsConnectionArgs

    @property
    def aws_conn_id(self) -> str | None:
        return self.aws.aws_conn_id

    @property
    def region_name(self) -> str | None:
        return self.aws.region_name

    @property
    def verify(self) -> bool | str | None:
        return self.aws.verify

    @property
    def botocore_config(self) -> dict[str, Any] | None:
        return self.aws.botocore_config


__all__ = ["AwsConnectionArgs", "WithAwsConnection"]
