"""AwsConnectionArgs: one value for aws_conn_id, region_name, verify and botocore_config."""

from __future__ import annotations

import pytest
from sagemaker_pipelines_provider.hooks.callback_queue import SageMakerCallbackQueueHook
from sagemaker_pipelines_provider.hooks.pipeline import SageMakerPipelineHook
from sagemaker_pipelines_provider.triggers.callback_receiver import ReceiverKey
from sagemaker_pipelines_provider.triggers.poller import PollerKey
from sagemaker_pipelines_provider.utils.aws_connection import AwsConnectionArgs


def test_equal_arguments_make_equal_keys_whatever_the_config_order() -> None:
    one = AwsConnectionArgs.of(
        "c", "eu-west-1", False, {"connect_timeout": 5, "retries": {"mode": "standard"}}
    )
    two = AwsConnectionArgs.of(
        "c", "eu-west-1", False, {"retries": {"mode": "standard"}, "connect_timeout": 5}
    )
    assert one == two and hash(one) == hash(two)
    assert PollerKey("p", one) == PollerKey("p", two)
    assert ReceiverKey("q", one) != ReceiverKey("q", AwsConnectionArgs.of("c", "us-east-1"))
    assert AwsConnectionArgs.of(botocore_config={}) == AwsConnectionArgs.of(botocore_config=None)
    assert AwsConnectionArgs() == AwsConnectionArgs.of()  # aws_default, no region, verify, config


def test_serialises_to_the_four_trigger_kwargs_and_back() -> None:
    args = AwsConnectionArgs.of(None, "us-east-1", "/ca.pem", {"connect_timeout": 5})
    kwargs = args.to_kwargs()
    assert kwargs == {
        "aws_conn_id": None,
        "region_name": "us-east-1",
        "verify": "/ca.pem",
        "botocore_config": {"connect_timeout": 5},
    }
    assert AwsConnectionArgs.of(**kwargs) == args
    kwargs["botocore_config"]["connect_timeout"] = 99  # a caller's copy: the value does not change
    assert args.botocore_config == {"connect_timeout": 5}


def test_builds_each_hook_with_the_same_arguments() -> None:
    args = AwsConnectionArgs.of("my_aws", "eu-west-1", False, {"connect_timeout": 5})
    for hook in (args.hook(SageMakerPipelineHook), args.hook(SageMakerCallbackQueueHook)):
        assert (hook.aws_conn_id, hook.region_name, hook.verify) == ("my_aws", "eu-west-1", False)
        assert hook.config is not None and hook.config.connect_timeout == 5  # type: ignore[attr-defined]


def test_a_botocore_config_that_is_not_a_dict_is_refused() -> None:
    with pytest.raises(TypeError, match="botocore_config must be a dict"):
        AwsConnectionArgs.of(botocore_config="connect_timeout=5")  # type: ignore[arg-type]
