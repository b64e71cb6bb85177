"""History through the application's handles: ``HubServer`` and ``ThreadedHub``."""

from __future__ import annotations

import json

from wshub.adapters import HubServer, ThreadedHub
from wshub.core import HubConfig
from wshub.core.auth import AccessPolicy, StaticTokens


def test_threaded_hub_configures_and_reads_history() -> None:
    server = HubServer(
        AccessPolicy(tokens=StaticTokens(["s3cret"])), port=0, config=HubConfig(history_size=2)
    )
    with ThreadedHub.start(server) as hub:
        hub.configure_topic("t", history_size=3, history_ttl=60.0)
        for n in range(4):
            hub.publish("t", n)
        page = hub.history("t")
        assert [json.loads(data)["payload"] for data in page.envelopes] == [1, 2, 3]
        assert page.epoch is not None
        assert hub.history("t", since=(2, page.epoch), limit=5).start == 3
        hub.publish("u", "kept by the default")
        assert hub.stats().history_entries == 4
