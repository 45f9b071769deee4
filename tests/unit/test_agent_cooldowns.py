"""One back-off per Consul agent (`AgentCooldowns`): the key is the agent the clients really call."""

from __future__ import annotations

from service.connect import consul_client
from service.consul.call import AgentCooldowns
from service.tokens import static


async def test_an_agent_named_with_and_without_its_default_port_is_one_back_off() -> None:
    """`--consul http://{host}` and `--lock-agent http://<host>:8500` reach the same agent (the
    client's default port is Consul's 8500, not HTTP's 80), so they share its one back-off."""
    cooldowns = AgentCooldowns()
    for bare, explicit in (("http://slave-1", "http://slave-1:8500"), ("https://slave-1", "https://slave-1:443"),
                           ("http://Slave-1", "http://slave-1:8500")):
        for url in (bare, explicit):  # the client really calls the port the key names
            client = consul_client(url, token=static(None), tls=None, timeout=1.0)
            try:
                assert client.http.base_uri.rsplit(":", 1)[1] == explicit.rsplit(":", 1)[1], url
            finally:
                await client.close()
        assert cooldowns.of(bare) is cooldowns.of(explicit), bare
    assert cooldowns.of("http://slave-1:8500") is not cooldowns.of("http://slave-2:8500")
    assert cooldowns.of("http://slave-1:8500") is not cooldowns.of("http://slave-1:8501")
