"""The core's configuration objects refuse impossible values at construction,
with the field's name in the message: ``HubConfig``, ``Limits``, ``TopicPolicy``.

Every field is crossed: the smallest refused value (0, a negative, a bool
where a count is meant) and the smallest accepted one.
"""

from __future__ import annotations

from typing import Any

import pytest

from wshub.core import HubConfig, Limits, TopicPolicy

POSITIVE_OR_NONE_COUNTS = ["max_connections", "max_per_principal", "max_per_host"]
POSITIVE_COUNTS = [
    "max_envelope_size",
    "max_depth",
    "max_pending_commands",
    "max_subscriptions",
    "message_burst",
    "auth_failure_burst",
]
POSITIVE_SPANS = ["error_window", "default_command_timeout", "auth_timeout"]
POSITIVE_OR_NONE_RATES = ["message_rate", "auth_failure_rate"]


@pytest.mark.parametrize("name", POSITIVE_OR_NONE_COUNTS + POSITIVE_COUNTS)
@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "3"])
def test_hub_config_counts_are_positive_integers(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        HubConfig(**{name: bad})
    assert getattr(HubConfig(**{name: 1}), name) == 1


@pytest.mark.parametrize("name", POSITIVE_OR_NONE_COUNTS)
def test_hub_config_bounds_may_be_none(name: str) -> None:
    assert getattr(HubConfig(**{name: None}), name) is None


@pytest.mark.parametrize("name", POSITIVE_SPANS)
@pytest.mark.parametrize("bad", [0, -0.5])
def test_hub_config_spans_are_positive(name: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be positive"):
        HubConfig(**{name: bad})
    assert getattr(HubConfig(**{name: 0.001}), name) == 0.001


@pytest.mark.parametrize("name", POSITIVE_OR_NONE_RATES)
def test_hub_config_rates_are_positive_or_none(name: str) -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=f"^{name} must be positive or None"):
            HubConfig(**{name: bad})
    assert getattr(HubConfig(**{name: None}), name) is None
    assert getattr(HubConfig(**{name: 0.5}), name) == 0.5


def test_hub_config_error_budget_and_retry_after() -> None:
    for bad in (-1, True):
        with pytest.raises(ValueError, match=r"^max_errors must be >= 0"):
            HubConfig(max_errors=bad)
    assert HubConfig(max_errors=0).max_errors == 0  # 0: the first error closes
    with pytest.raises(ValueError, match=r"^retry_after must be >= 0"):
        HubConfig(retry_after=-1)
    assert HubConfig(retry_after=0).retry_after == 0


LIMIT_COUNTS = [
    "max_message_size",
    "max_head_size",
    "max_outbox_size",
    "ping_burst",
    "max_request_line",
    "max_header_size",
    "max_header_count",
]
LIMIT_SPANS = ["handshake_timeout", "ping_timeout", "close_timeout"]
LIMIT_OPTIONAL_SPANS = ["ping_interval", "idle_timeout", "ping_rate"]


@pytest.mark.parametrize("name", LIMIT_COUNTS)
@pytest.mark.parametrize("bad", [0, -1, 2.0])
def test_limits_counts_are_positive_integers(name: str, bad: Any) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        Limits(**{name: bad})
    assert getattr(Limits(**{name: 1}), name) == 1


@pytest.mark.parametrize("name", LIMIT_SPANS)
@pytest.mark.parametrize("bad", [0, -1.0])
def test_limits_spans_are_positive(name: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be positive"):
        Limits(**{name: bad})
    assert getattr(Limits(**{name: 0.01}), name) == 0.01


@pytest.mark.parametrize("name", LIMIT_OPTIONAL_SPANS)
@pytest.mark.parametrize("bad", [0, -1.0])
def test_limits_optional_spans_are_positive_or_none(name: str, bad: float) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be positive or None"):
        Limits(**{name: bad})
    assert getattr(Limits(**{name: None}), name) is None
    assert getattr(Limits(**{name: 0.01}), name) == 0.01


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("publish", "everyone", "publish must be 'none', 'subscribers', 'all' or a callable"),
        ("subscribe", "subscribers", "subscribe must be 'none', 'all' or a callable"),
        ("slow_consumer", "block", "slow_consumer must be 'disconnect' or 'drop'"),
    ],
)
def test_topic_policy_refuses_unknown_words(field: str, bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        TopicPolicy(**{field: bad})


def test_topic_policy_accepts_its_words_and_callables() -> None:
    for publish in ("none", "subscribers", "all"):
        assert TopicPolicy(publish=publish).publish == publish  # type: ignore[arg-type]
    for subscribe in ("none", "all"):
        assert TopicPolicy(subscribe=subscribe).subscribe == subscribe  # type: ignore[arg-type]
    assert TopicPolicy(slow_consumer="drop").slow_consumer == "drop"

    def rule(*_args: Any) -> bool:
        return True

    assert TopicPolicy(publish=rule, subscribe=rule).publish is rule
