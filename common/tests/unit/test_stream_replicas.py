"""How many copies of each stream the services ask JetStream for: one by default, three when
`NATS_STREAM_REPLICAS=3` (a three-server cluster), and a running stream with another count is
brought to it at the next start. No server."""

import pytest
from nats.aio.client import Client as NATS
from pydantic import ValidationError

from ticketing_common.bus import EventBus, StreamLimits, _drifted
from ticketing_common.settings import NatsSettings


def configs(**env):
    limits = StreamLimits.of(NatsSettings(nats_url="nats://127.0.0.1:1", **env))
    return EventBus(NATS(), "TICKETING", limits).stream_configs()


def test_one_copy_by_default_three_on_a_cluster():
    assert [c.num_replicas for c in configs()] == [1, 1]
    assert [c.num_replicas for c in configs(nats_stream_replicas=3)] == [3, 3]


@pytest.mark.parametrize("replicas", [0, 6])
def test_a_count_jetstream_cannot_hold_is_refused_at_start(replicas):
    with pytest.raises(ValidationError):
        configs(nats_stream_replicas=replicas)


def test_a_running_stream_with_another_count_is_updated():
    (one, _), (three, _) = configs(), configs(nats_stream_replicas=3)
    assert _drifted(one, three) and _drifted(three, one)
    assert not _drifted(three, configs(nats_stream_replicas=3)[0])
